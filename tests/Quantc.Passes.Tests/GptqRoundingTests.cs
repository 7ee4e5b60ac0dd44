using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>
/// GPTQ's Hessians accumulated in several calibration runs that each fit <see cref="CalibrationOptions.HessianBytes"/> (issue 22
/// item 10) give the compiled model of one run over all of them byte for byte, whole or run in segments, and the compile log says
/// how many runs it took.
/// </summary>
public sealed class GptqRoundingTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-gptq");

    [Theory]
    [InlineData("llama", "w4a16-gptq", false)]
    [InlineData("llama", "quarot-w4a8", true)]
    [InlineData("opt", "w4a8", false)]
    public void HessiansInSeveralRunsCompileTheSameBytes(string arch, string recipe, bool segmented)
    {
        var source = Path.Combine(_dir.FullName, $"{arch}.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave(arch, "tiny", 0, "torch", source);
        long segmentBytes = long.MaxValue;
        if (segmented)
            using (var m = Model.Load(source)) segmentBytes = m.Graph.Initializers.Sum(v => v.Initializer!.ByteLength) / 4;
        var (one, oneLog) = CompileTo("one", source, recipe, long.MaxValue, segmentBytes);
        var (several, severalLog) = CompileTo("several", source, recipe, 1, segmentBytes);
        Assert.Matches(@"^weights: GPTQ Hessians of \d+ inputs \(\d+ layers, \d+ MiB\) in 1 calibration run of ", oneLog);
        var runs = System.Text.RegularExpressions.Regex.Match(severalLog, @"Hessians of (\d+) inputs .* in (\d+) calibration runs");
        Assert.True(runs.Success, severalLog);
        Assert.True(int.Parse(runs.Groups[1].Value) > 1);
        Assert.Equal(runs.Groups[1].Value, runs.Groups[2].Value);       // a budget of one byte: one run per input
        Assert.Equal(File.ReadAllBytes(one), File.ReadAllBytes(several));
        Assert.Equal(File.Exists(one + ".data"), File.Exists(several + ".data"));
        if (File.Exists(one + ".data")) Assert.Equal(File.ReadAllBytes(one + ".data"), File.ReadAllBytes(several + ".data"));
    }

    [Fact]
    public void InputsAreGroupedInOrderWithinTheBudget()
    {
        Assert.Equal([(0, 2), (2, 1), (3, 2)], GptqRounding.Groups([3, 4, 9, 2, 5], 8));
        Assert.Equal([(0, 1), (1, 1)], GptqRounding.Groups([10, 10], 1));
        Assert.Equal([(0, 3)], GptqRounding.Groups([1, 1, 1], long.MaxValue));
        Assert.Empty(GptqRounding.Groups([], 8));
    }

    private (string Path, string Log) CompileTo(string folder, string source, string recipe, long hessianBytes, long segmentBytes)
    {
        var output = Path.Combine(_dir.CreateSubdirectory(folder).FullName, "q.onnx");
        using var model = Model.Load(source);
        var calibration = DataLoader.Load(model, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 32, MaxSamples = 2 });
        using var result = TestCompiler.Compiler.Compile(model, TestCompiler.RecipeOf(recipe), new CompileOptions
        {
            Calibration = calibration, OutputPath = output,
            CalibrationRun = new CalibrationOptions { HessianBytes = hessianBytes, SegmentBytes = segmentBytes },
        });
        return (output, Assert.Single(result.Report.Log, l => l.Contains("GPTQ Hessians")));
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
