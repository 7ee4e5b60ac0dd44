using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;

namespace Quantc.Core.Runtime;

/// <summary>quantc's ONNX Runtime custom-op library (ai.quantc domain), built from custom-ops/ next to the program.</summary>
public static class CustomOps
{
    /// <summary>The operator domain.</summary>
    public const string Domain = "ai.quantc";

    /// <summary>Path of libquantc_ops next to the running program.</summary>
    public static string LibraryPath => Path.Combine(AppContext.BaseDirectory,
        OperatingSystem.IsWindows() ? "quantc_ops.dll" : OperatingSystem.IsMacOS() ? "libquantc_ops.dylib" : "libquantc_ops.so");

    /// <summary>True when a model (or one of its subgraphs) uses ai.quantc operators.</summary>
    public static bool IsUsedBy(Model model) => model.Graph.AllNodes().Any(n => n.Domain == Domain);

    /// <summary>Registers the library on <paramref name="options"/>; a clear error when it is missing.</summary>
    public static void Register(SessionOptions options)
    {
        if (!File.Exists(LibraryPath))
            throw new InvalidOperationException($"the model uses {Domain} operators but {LibraryPath} is missing (build custom-ops/: " +
                $"dotnet build)");
        options.RegisterCustomOpLibrary(LibraryPath);
    }
}
