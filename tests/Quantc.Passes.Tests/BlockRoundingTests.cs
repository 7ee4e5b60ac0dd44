using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>FlexRound / LRQ with scope block in the weights pass (issue 18) on the tiny reference models.</summary>
public sealed class BlockRoundingTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-block");

    public void Dispose() => _dir.Delete(recursive: true);

    private static IReadOnlyList<CalibrationSample> Data(Model m, string file, int n) => LearnedRoundingTests.Calibration(m, file, n);

    private static string W4(string weights) => LearnedRoundingTests.W4(weights) + "\n  - lower_qdq\n";

    /// <summary>Compiles with <paramref name="recipe"/>, writes the output (the compiler opens it in ONNX Runtime: an output that does
    /// not load fails the compile) and returns it loaded again with the compile's log.</summary>
    private (Model Compiled, CompileResult Result) CompileToFile(string recipe, IReadOnlyList<CalibrationSample> calibration)
    {
        var source = TestCompiler.TinyReference(_dir);
        var output = Path.Combine(_dir.FullName, $"out-{Guid.NewGuid():N}.onnx");
        var result = TestCompiler.Compiler.Compile(source, TestCompiler.RecipeOf(recipe), new CompileOptions
        {
            Calibration = new LoadedData(calibration, null, "test calibration", []), OutputPath = output,
        });
        Assert.NotNull(result.Saved);
        result.Dispose();
        source.Dispose();
        return (Model.Load(output), result);
    }

    /// <summary>Relative error ‖h − h_float‖² / ‖h_float‖² of each block's output (the residual stream) over
    /// <paramref name="data"/>.</summary>
    private static double[] BlockErrors(Model original, Model compiled, IReadOnlyList<CalibrationSample> data)
    {
        var blocks = LayerAnalysis.Analyze(original.Graph).DecoderBlocksOf(out var why) ?? throw new InvalidOperationException(why);
        var names = blocks.Select(b => b.Output.Name).ToList();
        Dictionary<string, List<float[]>> Run(Model m)
        {
            var got = names.ToDictionary(n => n, _ => new List<float[]>(), StringComparer.Ordinal);
            Calibrator.Collect(m, names, data, observe: (n, x, _) => { lock (got[n]) got[n].Add(x.ToArray()); });
            return got;
        }
        var f = Run(original);
        var q = Run(compiled);
        return names.Select(n =>
        {
            double err = 0, energy = 0;
            for (int s = 0; s < f[n].Count; s++)
                for (int i = 0; i < f[n][s].Length; i++)
                {
                    err += (double)(q[n][s][i] - f[n][s][i]) * (q[n][s][i] - f[n][s][i]);
                    energy += (double)f[n][s][i] * f[n][s][i];
                }
            return err / energy;
        }).ToArray();
    }

    [Fact]
    public void BlockScopeLowersTheBlockOutputErrorBelowLayerScopeAndTheOutputLoads()
    {
        using var original = TestCompiler.TinyReference(_dir);
        var calibration = Data(original, "calib.txt", 4);
        const string steps = "iterations: 60, patience: 0, seed: 1";
        var (block, rb) = CompileToFile(W4($"method: flexround, scope: block, {steps}"), calibration);
        var (layer, rl) = CompileToFile(W4($"method: flexround, scope: layer, {steps}"), calibration);
        var (rtn, _) = CompileToFile(W4("method: rtn"), calibration);
        using (block) using (layer) using (rtn)
        {
            AssertLearnedBlockWise(rb, "the C# decoder block reproduces ONNX Runtime's", "model.layers.0.mlp.down_proj",
                "learned with the six other linears of model.layers.0");
            Assert.Contains(rb.Context.Log, l => l.StartsWith("weights (flexround, block): memory estimate", StringComparison.Ordinal));
            foreach (var (name, data) in new[] { ("calibration", calibration), ("held-out", Data(original, "eval.txt", 4)) })
            {
                var eb = BlockErrors(original, block, data);
                var el = BlockErrors(original, layer, data);
                var er = BlockErrors(original, rtn, data);
                static string Row(double[] e) => string.Join(" ", e.Select(x => x.ToString("0.000e0")));
                log.WriteLine($"{name}: block {Row(eb)}; layer {Row(el)}; rtn {Row(er)}");
                // Block scope minimises the block's output error on the calibration data, from the quantized previous blocks'
                // output: there it must beat layer scope at every block; on held-out text it must beat round-to-nearest.
                if (name == "calibration")
                    for (int i = 0; i < eb.Length; i++)
                        Assert.True(eb[i] < el[i], $"block {i}'s output error {eb[i]:0.000e0} (block) vs {el[i]:0.000e0} (layer)");
                Assert.True(eb[^1] < er[^1], $"{name}: last block's output error {eb[^1]:0.000e0} (block) vs {er[^1]:0.000e0} (rtn)");
            }
        }
    }

    [Fact]
    public void ANonLlamaModelFallsBackToLayerScopeWithTheReason()
    {
        using var m = TestCompiler.TinyReference(_dir, "opt");
        var r = TestCompiler.Compile(m, W4("method: lrq, scope: block, iterations: 5"), Data(m, "calib.txt", 2));
        var notice = Assert.Single(r.Context.Notices, n => n.Contains("scope block does not apply", StringComparison.Ordinal));
        log.WriteLine(notice);
        Assert.Contains("LayerNorm (OPT-style)", notice, StringComparison.Ordinal);
        Assert.Contains("learning layer by layer instead", notice, StringComparison.Ordinal);
        Assert.Contains(r.Context.Log, l => l.StartsWith("weights (lrq): memory estimate", StringComparison.Ordinal));
        Assert.All(r.Context.Plan.Layers.Where(p => p.QuantizedWeight is not null), p => Assert.Equal("lrq", p.WeightMethod));
    }

    private static string W8A8(string weights) => $$"""
        passes:
          - quantize: { weights: int8, activations: uint8, mode: static }
          - ranges: { method: minmax }
          - weights: { {{weights}} }
        """;

    [Fact]
    public void StaticActivationsLearnBlockWiseFromQuantizedInputsAndStepZeroIsRoundToNearest()
    {
        using var a = TestCompiler.TinyReference(_dir);
        using var b = TestCompiler.TinyReference(_dir);
        using var c = TestCompiler.TinyReference(_dir);
        var zero = TestCompiler.Compile(a, W8A8("method: lrq, scope: block, iterations: 0"), Data(a, "calib.txt", 2));
        var rtn = TestCompiler.Compile(b, W8A8("method: rtn"), Data(b, "calib.txt", 2));
        int layers = 0;
        foreach (var p in rtn.Context.Plan.Layers.Where(p => p.QuantizedWeight is not null))
        {
            var q = zero.Context.Plan[p.Name].QuantizedWeight!;
            Assert.Equal(p.QuantizedWeight!.Values, q.Values);
            Assert.Equal(p.QuantizedWeight.Scales, q.Scales);
            layers++;
        }
        Assert.True(layers > 20);
        var r = TestCompiler.Compile(c, W8A8("method: flexround, scope: block, iterations: 30, patience: 0"), Data(c, "calib.txt", 2));
        AssertLearnedBlockWise(r, "the linears read their inputs quantized as at run time", "model.layers.0.self_attn.o_proj",
            "inputs quantized as at run time");
        Assert.Contains(r.Context.Log, l => l.Contains("blocks in", StringComparison.Ordinal));
    }

    /// <summary>The compile learned block-wise (no fallback notice), its log holds <paramref name="logged"/> and the reasons of
    /// <paramref name="layer"/> hold <paramref name="reason"/>.</summary>
    private void AssertLearnedBlockWise(CompileResult r, string logged, string layer, string reason)
    {
        foreach (var l in r.Context.Log.Where(l => l.StartsWith("weights", StringComparison.Ordinal))) log.WriteLine(l);
        Assert.DoesNotContain(r.Context.Notices, n => n.Contains("does not apply", StringComparison.Ordinal));
        Assert.Contains(r.Context.Log, l => l.Contains(logged, StringComparison.Ordinal));
        Assert.Contains(reason, string.Join('\n', r.Context.Plan[layer].Reasons), StringComparison.Ordinal);
    }

    [Fact]
    public void ScopeBlockNeedsALearnedMethod()
    {
        var recipe = TestCompiler.RecipeOf(W4("method: gptq, scope: block"));
        var e = Assert.ThrowsAny<Exception>(() => TestCompiler.Compiler.Instantiate(recipe));
        Assert.Contains("scope: block applies to methods flexround and lrq, not gptq", e.Message, StringComparison.Ordinal);
    }
}
