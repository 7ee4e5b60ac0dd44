using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Runtime;
using Quantc.Core.Verification;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>
/// Calibration of a model run one segment at a time (<see cref="SegmentedRun"/>, issue 22 item 10) is the whole model's: the same
/// statistics bit for bit on the tiny reference models cut with a forced small segment size, and the same compiled bytes.
/// </summary>
public sealed class SegmentedRunTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-segments");

    private static long WeightBytes(Model m) => m.Graph.Initializers.Sum(v => v.Initializer!.ByteLength);

    private static LoadedData Calibration(Model m, int samples) => DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
        new DataOptions { SplitDocuments = false, SequenceLength = 32, MaxSamples = samples });

    [Theory]
    [InlineData("llama")]
    [InlineData("opt")]
    public void SegmentedStatisticsEqualTheWholeModels(string arch)
    {
        using var m = TestCompiler.TinyReference(_dir, arch);
        var tensors = m.Graph.Nodes.Where(n => n.OpType is "MatMul" or "Gemm").Select(n => n.Inputs[0]!.Name).Distinct().ToList();
        var samples = Calibration(m, 3).Samples;
        long budget = WeightBytes(m) / 5;
        var segments = SegmentedRun.Plan(m, budget)!;
        Assert.InRange(segments.Count, 4, 60);
        Assert.Equal(m.Graph.Nodes.Count, segments.Sum(s => s.End - s.Start));
        Assert.Null(SegmentedRun.Plan(m, WeightBytes(m)));

        var whole = Calibrator.Collect(m, tensors, samples, new CalibrationOptions { SegmentBytes = long.MaxValue });
        var cut = Calibrator.Collect(m, tensors, samples, new CalibrationOptions { SegmentBytes = budget });
        Assert.Equal(whole.Keys.Order(), cut.Keys.Order());
        foreach (var (name, w) in whole)
        {
            var c = cut[name];
            Assert.Equal((w.Min, w.Max, w.Tokens, w.Samples), (c.Min, c.Max, c.Tokens, c.Samples));
            Assert.Equal(w.ChannelMin.ToArray(), c.ChannelMin.ToArray());
            Assert.Equal(w.ChannelMax.ToArray(), c.ChannelMax.ToArray());
            Assert.Equal(w.ChannelMean, c.ChannelMean);
            Assert.Equal(w.LargestTokens, c.LargestTokens);
        }
    }

    [Theory]
    [InlineData("smoothquant-auto")]
    [InlineData("w4a16-gptq")]
    public void SegmentedCalibrationCompilesTheSameBytes(string recipe)
    {
        var source = Path.Combine(_dir.FullName, "llama.onnx");
        if (!File.Exists(source)) Quantc.Models.ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", source);
        long budget;
        using (var m = Model.Load(source)) budget = WeightBytes(m) / 4;
        var whole = CompileTo("whole", source, recipe, long.MaxValue);
        var cut = CompileTo("cut", source, recipe, budget);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(cut));
    }

    [Fact]
    public void SegmentedVerifyMeasuresTheSame()
    {
        var source = Path.Combine(_dir.FullName, "llama.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", source);
        var output = CompileTo("verify", source, "w8a8", long.MaxValue);
        using var original = Model.Load(source);
        using var compiled = Model.Load(output);
        var held = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 32, MaxSamples = 3 });
        long budget = WeightBytes(compiled) / 4;
        Assert.NotNull(SegmentedRun.Plan(original, budget));
        Assert.NotNull(SegmentedRun.Plan(compiled, budget));
        var whole = Verifier.Run(original, compiled, held.Samples, held.Tokens,
            new VerifyOptions { SegmentBytes = long.MaxValue, GreedySteps = 0 });
        var cut = Verifier.Run(original, compiled, held.Samples, held.Tokens, new VerifyOptions { SegmentBytes = budget, GreedySteps = 0 });
        Assert.Equal(whole.Outputs, cut.Outputs);
        Assert.Equal(whole.Logits, cut.Logits);
        Assert.NotEmpty(whole.Layers);
        Assert.Equal(whole.Layers, cut.Layers);

        // Greedy decoding runs token by token; in segments every segment gets a session per token: the same tokens.
        var greedyWhole = Verifier.Run(original, compiled, held.Samples, held.Tokens,
            new VerifyOptions { SegmentBytes = long.MaxValue, PerLayer = false, GreedySteps = 6 });
        var greedyCut = Verifier.Run(original, compiled, held.Samples, held.Tokens,
            new VerifyOptions { SegmentBytes = budget, PerLayer = false, GreedySteps = 6 });
        Assert.NotNull(greedyWhole.Greedy);
        Assert.Equal(greedyWhole.Greedy, greedyCut.Greedy);
        // In segments at most SegmentedGreedySteps tokens: a prefix of the whole-model comparison.
        var greedyShort = Verifier.Run(original, compiled, held.Samples, held.Tokens,
            new VerifyOptions { SegmentBytes = budget, PerLayer = false, GreedySteps = 6, SegmentedGreedySteps = 3 });
        Assert.Equal(3, greedyShort.Greedy!.Steps);
        Assert.Equal(Math.Min(3, greedyWhole.Greedy!.Matching), greedyShort.Greedy.Matching);
        Assert.Equal(GreedyDecoding.Decode(compiled, [5, 17, 3], 6), GreedyDecoding.Decode(compiled, [5, 17, 3], 6, "logits", budget));
        Assert.Equal(GreedyDecoding.Decode(original, [5, 17, 3], 6), GreedyDecoding.Decode(original, [5, 17, 3], 6, "logits", budget));
    }

    private string CompileTo(string folder, string source, string recipe, long segmentBytes)
    {
        var output = Path.Combine(_dir.CreateSubdirectory(folder).FullName, "q.onnx");
        using var model = Model.Load(source);
        using var result = TestCompiler.Compiler.Compile(model, TestCompiler.RecipeOf(recipe), new CompileOptions
        {
            Calibration = Calibration(model, 2), OutputPath = output,
            CalibrationRun = new CalibrationOptions { SegmentBytes = segmentBytes },
        });
        return output;
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
