using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>
/// Tensors and rounded weights moved to the spill file (<see cref="Model.SpillMinBytes"/>) leave the compiled model byte for byte
/// what it is with everything in memory (issue 22 item 10).
/// </summary>
public sealed class SpillTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-spill");

    [Theory]
    [InlineData("w4a16-rtn")]
    [InlineData("smoothquant-auto")]
    [InlineData("w8a8")]
    [InlineData("w4a16-gptq")]
    [InlineData("quarot-w4a8")]
    [InlineData("fireq")]
    public void SpillingEverythingGivesTheSameBytes(string recipe)
    {
        var source = Path.Combine(_dir.FullName, "llama.onnx");
        if (!File.Exists(source)) Quantc.Models.ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", source);
        var (memory, memorySpilled) = CompileTo("memory", source, recipe, long.MaxValue);
        var (spilled, spilledBytes) = CompileTo("spilled", source, recipe, 0);
        Assert.Equal(0, memorySpilled);
        Assert.True(spilledBytes > 0, "nothing was spilled");
        Assert.Equal(File.ReadAllBytes(memory), File.ReadAllBytes(spilled));
        Assert.Equal(File.Exists(memory + ".data"), File.Exists(spilled + ".data"));
        if (File.Exists(memory + ".data")) Assert.Equal(File.ReadAllBytes(memory + ".data"), File.ReadAllBytes(spilled + ".data"));
    }

    private (string Path, long Spilled) CompileTo(string folder, string source, string recipe, long spillMinBytes)
    {
        var output = Path.Combine(_dir.CreateSubdirectory(folder).FullName, "q.onnx");
        using var model = Model.Load(source);
        model.SpillMinBytes = spillMinBytes;
        var calibration = DataLoader.Load(model, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 32, MaxSamples = 2 });
        using var result = TestCompiler.Compiler.Compile(model, TestCompiler.RecipeOf(recipe),
            new CompileOptions { Calibration = calibration, OutputPath = output });
        return (output, model.SpilledBytes);
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
