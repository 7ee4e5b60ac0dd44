namespace Quantc.Tests.Shared;

/// <summary>The real trained models beside the repository (linked into the test projects that use them).</summary>
internal static class RealModels
{
    /// <summary>../shared/real beside the repository root (the folder holding Compiler.sln), or a failure that says where it was looked
    /// for.</summary>
    public static string Dir()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Compiler.sln"))) d = d.Parent;
        Xunit.Assert.True(d is not null, $"repository root (Compiler.sln) not found above {AppContext.BaseDirectory}");
        string real = Path.GetFullPath(Path.Combine(d!.FullName, "..", "shared", "real"));
        Xunit.Assert.True(File.Exists(Path.Combine(real, "babyllama-tok105", "model.safetensors")),
            $"the real models are missing: expected {real}/babyllama-tok105/model.safetensors (../shared/real beside the repository)");
        return real;
    }
}
