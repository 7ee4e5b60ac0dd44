using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
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
        Assert.Matches(@"^weights: GPTQ Hessians of \d+ inputs \(\d+ layers, \d+ MiB\) in 1 calibration run, ", oneLog);
        var runs = System.Text.RegularExpressions.Regex.Match(severalLog, @"Hessians of (\d+) inputs .* in (\d+) calibration runs");
        Assert.True(runs.Success, severalLog);
        int inputs = int.Parse(runs.Groups[1].Value), count = int.Parse(runs.Groups[2].Value);
        // A budget of one byte: one run per input of a whole model; in segments, as many as the most inputs one segment hands over.
        if (segmented) Assert.InRange(count, 2, inputs - 1);
        else Assert.Equal(inputs, count);
        Assert.Equal(segmented, severalLog.Contains("; the model runs in "));
        Assert.Equal(File.ReadAllBytes(one), File.ReadAllBytes(several));
        Assert.Equal(File.Exists(one + ".data"), File.Exists(several + ".data"));
        if (File.Exists(one + ".data")) Assert.Equal(File.ReadAllBytes(one + ".data"), File.ReadAllBytes(several + ".data"));
    }

    [Fact]
    public void EachSegmentsInputsAreCutIntoRunsWithinTheBudget()
    {
        // One segment: consecutive chunks, one per run.
        Assert.Equal([[0, 1], [2], [3, 4]], GptqRounding.Runs([3, 4, 9, 2, 5], [0, 0, 0, 0, 0], 8));
        Assert.Equal([[0], [1]], GptqRounding.Runs([10, 10], [0, 0], 1));
        // Segments: run r takes each segment's r-th chunk, so a run holds one segment's chunk at a time.
        Assert.Equal([[0, 1, 3, 5], [2, 4]], GptqRounding.Runs([3, 4, 9, 6, 2, 1], [0, 0, 0, 1, 1, 2], 7));
        Assert.Equal([[0, 1, 2]], GptqRounding.Runs([5, 5, 5], [0, 1, 2], 8));
        Assert.Empty(GptqRounding.Runs([], [], 8));
    }

    [Fact]
    public void SegmentsHandOverTheirTensorsOnceAllSamplesWentThrough()
    {
        using var m = TestCompiler.TinyReference(_dir);
        var tensors = m.Graph.Nodes.Where(n => n.OpType == "MatMul").Select(n => n.Inputs[0]!.Name).Distinct().ToList();
        var samples = DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 16, MaxSamples = 3 }).Samples;
        var segments = Core.Runtime.SegmentedRun.Plan(m, m.Graph.Initializers.Sum(v => v.Initializer!.ByteLength) / 4)!;
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var completed = new List<(string Name, int Seen)>();
        var wanted = tensors.Take(tensors.Count / 2).ToList();
        Core.Runtime.SegmentedRun.Run(m, segments, wanted, samples, (name, _, _) => seen.AddOrUpdate(name, 1, (_, n) => n + 1),
            completed: names => completed.AddRange(names.Select(n => (n, seen.GetValueOrDefault(n)))));
        Assert.Equal(wanted.Order(), completed.Select(c => c.Name).Order());
        Assert.All(completed, c => Assert.Equal(samples.Count, c.Seen));
        var of = Core.Runtime.SegmentedRun.SegmentsOf(m, segments, wanted);
        Assert.True(of.Values.Distinct().Count() > 1);
        Assert.Equal(of.OrderBy(kv => kv.Value).Select(kv => kv.Value), completed.Select(c => of[c.Name]));

        // A whole-model run hands over each group's tensors once its run is done (here one tensor per group).
        seen.Clear();
        completed.Clear();
        Calibrator.Collect(m, wanted, samples, new CalibrationOptions { SegmentBytes = long.MaxValue, GroupBytes = 1 },
            observe: (name, _, _) => seen.AddOrUpdate(name, 1, (_, n) => n + 1),
            completed: names => completed.AddRange(names.Select(n => (n, seen.GetValueOrDefault(n)))));
        Assert.Equal(wanted, completed.Select(c => c.Name));
        Assert.All(completed, c => Assert.Equal(samples.Count, c.Seen));
    }

    [Fact]
    public void AsymmetricWeightsAreRefusedBeforeAnyCalibrationRunAndNoLayerIsSaid()
    {
        using var m = TestCompiler.TinyReference(_dir);
        var asymmetric = Recipe.Parse("name: x\npasses:\n  - quantize: { weights: int4, symmetric: false, activations: fp32 }\n" +
            "  - weights: { method: gptq }\n  - lower_qdq", "x.yaml");
        // No calibration data: the refusal comes first, before GPTQ asks for data.
        var e = Assert.Throws<Quantc.Onnx.BadInputException>(() => TestCompiler.Compiler.Compile(m, asymmetric, new CompileOptions()));
        Assert.Contains("GPTQ here is symmetric", e.Message);

        var none = Recipe.Parse("name: x\npasses:\n  - quantize: { weights: fp8, exclude: ['.*'] }\n  - weights: { method: gptq }",
            "x.yaml");
        var calibration = DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 16, MaxSamples = 1 });
        using var result = TestCompiler.Compiler.Compile(m, none, new CompileOptions { Calibration = calibration });
        Assert.Contains("weights: GPTQ found no integer MatMul/Gemm layer to round (0 Hessians)", result.Report.Log);
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
