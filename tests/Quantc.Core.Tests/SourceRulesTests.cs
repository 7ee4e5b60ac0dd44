namespace Quantc.Core.Tests;

/// <summary>Rules the production source keeps (docs/ARCHITECTURE.md): no line over 140 characters; passes emit nodes through the
/// one graph builder (<c>Quantc.Ir.Building.Emitter</c>), never <c>Graph.AddNode</c> themselves.</summary>
public class SourceRulesTests
{
    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Compiler.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("Compiler.sln not found above the test binaries");
    }

    [Fact]
    public void NoProductionLineIsLongerThan140Characters()
    {
        string root = RepositoryRoot();
        var longLines = new List<string>();
        foreach (var dir in new[] { "src", "passes", "models" })
            foreach (var f in Directory.EnumerateFiles(Path.Combine(root, dir), "*.cs", SearchOption.AllDirectories))
            {
                if (f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ||
                    f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)) continue;
                var lines = File.ReadAllLines(f);
                for (int i = 0; i < lines.Length; i++)
                    if (lines[i].Length > 140) longLines.Add($"{Path.GetRelativePath(root, f)}:{i + 1} ({lines[i].Length} characters)");
            }
        Assert.True(longLines.Count == 0, "lines over 140 characters:\n" + string.Join('\n', longLines));
    }

    [Fact]
    public void PassesEmitNodesThroughTheEmitter()
    {
        string root = RepositoryRoot();
        var direct = new List<string>();
        foreach (var f in Directory.EnumerateFiles(Path.Combine(root, "passes", "Quantc.Passes"), "*.cs", SearchOption.AllDirectories))
        {
            if (f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)) continue;
            var lines = File.ReadAllLines(f);
            for (int i = 0; i < lines.Length; i++)
                if (lines[i].Contains(".AddNode(", StringComparison.Ordinal)) direct.Add($"{Path.GetRelativePath(root, f)}:{i + 1}");
        }
        Assert.True(direct.Count == 0, "passes adding nodes without the Emitter:\n" + string.Join('\n', direct));
    }
}
