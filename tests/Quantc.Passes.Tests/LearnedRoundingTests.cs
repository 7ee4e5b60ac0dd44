using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>FlexRound and LRQ in the weights pass (issue 18) on the tiny reference llama.</summary>
public sealed class LearnedRoundingTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-lrq");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Load() => TestCompiler.TinyReference(_dir);

    internal static IReadOnlyList<CalibrationSample> Calibration(Model m, string file = "calib.txt", int n = 4) =>
        DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, file),
            new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = n }).Samples;

    internal static string W4(string weights) => $$"""
        passes:
          - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: fp32 }
          - weights: { {{weights}} }
        """;

    [Theory]
    [InlineData("flexround")]
    [InlineData("lrq")]
    public void StepZeroCompilesToRoundToNearestBitForBit(string method)
    {
        using var a = Load();
        using var b = Load();
        var learned = TestCompiler.Compile(a, W4($"method: {method}, iterations: 0"), Calibration(a));
        var rtn = TestCompiler.Compile(b, W4("method: rtn"), Calibration(b));
        int layers = 0;
        foreach (var p in rtn.Context.Plan.Layers.Where(p => p.QuantizedWeight is not null))
        {
            var q = learned.Context.Plan[p.Name].QuantizedWeight!;
            Assert.Equal(p.QuantizedWeight!.Values, q.Values);
            Assert.Equal(p.QuantizedWeight.Scales, q.Scales);
            Assert.Equal(method, learned.Context.Plan[p.Name].WeightMethod);
            layers++;
        }
        Assert.True(layers > 20);
    }

    [Theory]
    [InlineData("flexround", "")]
    [InlineData("lrq", "")]
    [InlineData("lrq", ", fp8_cache: false, fp8_optimizer: false")]
    public void LearnedRoundingLowersEveryLayersErrorAndIsDeterministic(string method, string coat)
    {
        using var a = Load();
        using var b = Load();
        string recipe = W4($"method: {method}, iterations: 30, patience: 0, seed: 5{coat}");
        var ra = TestCompiler.Compile(a, recipe, Calibration(a));
        var rb = TestCompiler.Compile(b, recipe, Calibration(b));
        var plans = ra.Context.Plan.Layers.Where(p => p.QuantizedWeight is not null).ToList();
        foreach (var p in plans)
        {
            Assert.Equal(p.QuantizedWeight!.Values, rb.Context.Plan[p.Name].QuantizedWeight!.Values);
            Assert.Equal(p.QuantizedWeight.Scales, rb.Context.Plan[p.Name].QuantizedWeight!.Scales);
        }
        var lines = ra.Context.Log.Where(l => l.StartsWith($"weights ({method})", StringComparison.Ordinal)).ToList();
        foreach (var l in lines.Take(3).Concat(lines.TakeLast(1))) log.WriteLine(l);
        Assert.StartsWith($"weights ({method}): memory estimate", lines[0]);
        Assert.Contains(coat == "" ? "FP8 e4m3 per tensor" : "float32", lines[0]);
        // Every layer either improved on round-to-nearest's output error or kept it (the pass never returns a worse rounding).
        int improved = lines.Count(l => l.Contains("(RTN) →", StringComparison.Ordinal)
            && l.Contains("steps in", StringComparison.Ordinal));
        int kept = lines.Count(l => l.Contains("kept round-to-nearest", StringComparison.Ordinal));
        Assert.Equal(plans.Count, improved + kept);
        Assert.True(improved >= plans.Count / 2, $"{improved} of {plans.Count} layers improved");
    }

    [Fact]
    public void LearnedRoundingBeatsRoundToNearestOnTheLogits()
    {
        using var original = Load();
        using var a = Load();
        using var b = Load();
        using var learned = TestCompiler.CompileAndReload(_dir, a, W4("method: flexround, iterations: 80") + "\n  - lower_qdq\n",
            Calibration(a), out _);
        using var rtn = TestCompiler.CompileAndReload(_dir, b, W4("method: rtn") + "\n  - lower_qdq\n", Calibration(b), out _);
        var eval = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 4 });
        double Sqnr(Model m) => Verifier.Run(original, m, eval.Samples, eval.Tokens, new VerifyOptions { PerLayer = false })
            .Outputs.Single(o => o.Name == "logits").SqnrDb;
        double sl = Sqnr(learned), sr = Sqnr(rtn);
        log.WriteLine($"flexround {sl:0.00} dB, rtn {sr:0.00} dB");
        Assert.True(sl > sr + 0.5, $"flexround {sl:0.00} dB vs rtn {sr:0.00} dB");
    }

    /// <summary>Whether built-in recipe <paramref name="name"/> learns its rounding (the recipe matrices leave those to this
    /// class).</summary>
    public static bool Learns(string name) => Builtins.Recipes[name].Contains("method: flexround", StringComparison.Ordinal)
        || Builtins.Recipes[name].Contains("method: lrq", StringComparison.Ordinal);

    public static TheoryData<string> LearnedRecipes => [.. Builtins.Recipes.Keys.Where(Learns)];

    /// <summary>Each learned-rounding recipe, with its steps cut to 10 per layer, compiles to stock ONNX Runtime operators and
    /// verifies (the reference llama's massive activations hold every per-tensor static W8A8 near 7 dB: plain w8a8 too).</summary>
    [Theory]
    [MemberData(nameof(LearnedRecipes))]
    public void EveryLearnedRecipeCompilesAndVerifies(string recipe)
    {
        using var original = Load();
        using var m = Load();
        string yaml = System.Text.RegularExpressions.Regex.Replace(Builtins.Recipes[recipe], @"method: (flexround|lrq) \}",
            "method: $1, iterations: 10 }");
        Assert.Contains("iterations: 10", yaml);
        using var compiled = TestCompiler.CompileAndReload(_dir, m, yaml, Calibration(m, n: 4), out var result);
        Assert.DoesNotContain(compiled.Graph.AllNodes(), n => n.Domain == "ai.quantc");
        var eval = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 2 });
        var r = Verifier.Run(original, compiled, eval.Samples, eval.Tokens, new VerifyOptions { PerLayer = false });
        var logits = r.Outputs.Single(o => o.Name == "logits");
        log.WriteLine($"{recipe}: logits SQNR {logits.SqnrDb:0.00} dB");
        Assert.Equal(0, logits.NonFinite);
        Assert.True(logits.SqnrDb > (recipe.EndsWith("w8a8", StringComparison.Ordinal) ? 5 : 10), $"{recipe}: {logits.SqnrDb:0.00} dB");
        // The w4a16 recipes learn block by block on the llama, the w8a8 ones layer by layer (block scope measured no better there).
        string done = yaml.Contains("scope: block", StringComparison.Ordinal) ? "blocks in" : "layers in";
        Assert.Contains(result.Context.Log, l => l.Contains(done, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("method: flexround, holdout: 0.6", "parameter 'holdout' = 0.6 must be in [0, 0.5]")]
    [InlineData("method: lrq, holdout: -0.1", "parameter 'holdout' = -0.1 must be in [0, 0.5]")]
    [InlineData("method: gptq, holdout: 0.25", "holdout applies to methods flexround and lrq (learned rounding), not gptq")]
    [InlineData("method: rtn, holdout: 0", "holdout applies to methods flexround and lrq (learned rounding), not rtn")]
    public void HoldoutIsValidated(string weights, string problem)
    {
        var e = Assert.ThrowsAny<Exception>(() => TestCompiler.Compiler.Instantiate(TestCompiler.RecipeOf(W4(weights))));
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("method: flexround, holdout: 0.5")]
    [InlineData("method: lrq, holdout: 0")]
    [InlineData("method: rtn")]
    [InlineData("method: gptq")]
    public void HoldoutAcceptsItsRangeAndIsDefaultForEveryMethod(string weights) =>
        TestCompiler.Compiler.Instantiate(TestCompiler.RecipeOf(W4(weights)));

    /// <summary>The log says which rows chose each layer's (or block's) result, and says so when the hold-out is off.</summary>
    [Theory]
    [InlineData("layer", 4, "", "holdout 0.125: 1 of 4 sequences held out", "held-out output error (1 of 4 sequences held out)")]
    [InlineData("layer", 2, "", "; holdout off: 2 calibration sequences, fewer than 4 (every row",
        "output error over every cached row (holdout off: 2 calibration sequences, fewer than 4)")]
    [InlineData("layer", 4, ", holdout: 0", "; holdout 0 (every row trains", "output error over every cached row (holdout 0)")]
    [InlineData("block", 4, ", holdout: 0.5", "holdout 0.5: 2 of 4 sequences held out",
        "held-out block output error (2 of 4 sequences held out)")]
    public void TheLogSaysWhichRowsChoseTheResult(string scope, int sequences, string holdout, string first, string each)
    {
        using var m = Load();
        var r = TestCompiler.Compile(m, W4($"method: flexround, scope: {scope}, iterations: 10, patience: 0{holdout}"),
            Calibration(m, n: sequences));
        string tag = scope == "block" ? "weights (flexround, block)" : "weights (flexround)";
        var lines = r.Context.Log.Where(l => l.StartsWith(tag, StringComparison.Ordinal)).ToList();
        foreach (var l in lines.Take(2)) log.WriteLine(l);
        Assert.Contains(first, lines[0], StringComparison.Ordinal);
        var learned = lines.Where(l => l.Contains("steps in", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(learned);
        Assert.All(learned, l => Assert.Contains(each, l, StringComparison.Ordinal));
        Assert.All(learned, l => Assert.Contains(holdout == "" && sequences == 4 || scope == "block" ? "training rows" : "error by window",
            l, StringComparison.Ordinal));
    }

    [Fact]
    public void LearnedRoundingNeedsCalibrationData()
    {
        using var m = Load();
        var e = Assert.Throws<BadInputException>(() => TestCompiler.Compile(m, W4("method: lrq")));
        Assert.Contains("--calib", e.Message);
    }
}
