using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Ir;
using Quantc.Models;

namespace Quantc.Passes.Tests;

/// <summary>The <see cref="Compiler"/> as a C# user calls it (the example of docs/ARCHITECTURE.md, "Compiling from C#").</summary>
public sealed class CompilerApiTests : IDisposable
{
    private static string Text(string name) => Path.Combine(AppContext.BaseDirectory, name);

    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-compiler-api");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Reference()
    {
        var path = Path.Combine(_dir.FullName, "llama.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        return path;
    }

    [Fact]
    public void CompilesWritesVerifiesAndReports()
    {
        string input = Reference(), output = Path.Combine(_dir.FullName, "llama.w8a8.onnx");

        // The documented example, with smaller data.
        var compiler = new Compiler(Builtins.Passes());
        var recipe = Builtins.Recipe("w8a8");
        using var model = Model.Load(input);
        var calibration = DataLoader.Load(model, Text("calib.txt"), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 4 });
        var heldOut = DataLoader.Load(model, Text("eval.txt"), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 2 });
        using var result = compiler.Compile(model, recipe, new CompileOptions
        {
            Calibration = calibration,
            HeldOut = heldOut,
            OutputPath = output,
        });
        File.WriteAllText(Path.ChangeExtension(output, ".report.json"), result.Report.ToJson());

        Assert.True(File.Exists(output));
        Assert.Equal(output, result.Saved!.ModelPath);
        Assert.Equal((input, Path.GetFullPath(output), "w8a8"), (result.Report.Input, result.Report.Output, result.Report.Recipe));
        Assert.Equal(recipe.Steps.Count, result.Report.Passes.Count);
        // The stages are timed in order; only the passes that ran ONNX Runtime over the calibration data have calibration time.
        Assert.Equal(["import", "passes", "write", "ORT load check", "verify"], result.Clock.Stages.Select(s => s.Stage));
        Assert.All(result.Clock.Stages, s => Assert.True(s.Elapsed > TimeSpan.Zero && s.PeakRssBytes > 0, s.ToString()));
        Assert.True(result.Timings.Single(t => t.Pass == "ranges").Calibration > TimeSpan.Zero);
        Assert.All(result.Timings.Where(t => t.Pass != "ranges"), t => Assert.Equal(TimeSpan.Zero, t.Calibration));
        Assert.All(result.Timings, t => Assert.True(t.Calibration <= t.Elapsed, t.ToString()));
        var passes = result.Clock.Of("passes");
        Assert.True(passes >= TimeSpan.FromTicks(result.Timings.Sum(t => (t.Elapsed + t.Housekeeping).Ticks)), passes.ToString());

        // reduce_range: auto puts w8a8's weights on a 7-bit grid on a CPU without VNNI.
        string w = Quantc.Core.Runtime.CpuFeatures.HasInt8DotProduct ? "int8" : "int7";
        Assert.Contains(result.Report.Layers, l => l.Weights == w && l.ActivationRange is { Count: 2 } && l.RangeMethod == "minmax");
        var v = result.Report.Verify!;
        Assert.Equal(("logits", heldOut.Description), (v.Output, v.Data));
        Assert.True(v.SqnrDb > 0 && v.Top1Agreement > 0, $"SQNR {v.SqnrDb} dB, top-1 {v.Top1Agreement}");
        Assert.Equal(result.Verify!.Outputs.Single(o => o.Name == "logits").SqnrDb, v.SqnrDb);
    }

    [Fact]
    public void CompilesAModelByPathAndOwnsIt()
    {
        string input = Reference();
        var compiler = new Compiler(Builtins.Passes());
        using var result = compiler.Compile(input, Builtins.Recipe("w4a16-rtn"));
        Assert.True(result.OwnsModel);
        Assert.Equal(input, result.Report.Input);
        Assert.Contains(result.Model.Metadata, kv => kv.Key == Compiler.RecipeMetadataKey && kv.Value == "w4a16-rtn");
        Assert.Contains(result.Report.Layers, l => l.Weights == "int4" && l.GroupSize > 0);
    }
}
