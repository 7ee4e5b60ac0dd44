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
    [InlineData("prefixquant-w8a8")]
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

    [Fact]
    public void LayerCopiesAreCollectedOnlyOnAModelThatSpillsPastTheThreshold()
    {
        var source = Path.Combine(_dir.FullName, "llama.onnx");
        if (!File.Exists(source)) Quantc.Models.ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", source);
        using var model = Model.Load(source);
        var small = new Quantc.Core.Pipeline.PassContext(model) { LayerGarbageBytes = 4 << 20 };
        var huge = new Quantc.Core.Pipeline.PassContext(model) { LayerGarbageBytes = 1L << 50 };
        byte[]? keep = null;
        for (int i = 0; i < 8; i++) keep = new byte[1 << 20];      // 8 MiB allocated
        small.ReleaseLayerCopies();
        Assert.Equal(0, small.LayerCopyCollections);                // nothing spilled: a small model is never collected
        model.SpillMinBytes = 0;
        model.SpillFileFor(1)!.Write(new byte[16]);
        small.ReleaseLayerCopies();
        huge.ReleaseLayerCopies();
        Assert.Equal(1, small.LayerCopyCollections);                // spills, more than 4 MiB allocated: collected
        Assert.Equal(0, huge.LayerCopyCollections);                 // not past its threshold
        GC.KeepAlive(keep);
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
