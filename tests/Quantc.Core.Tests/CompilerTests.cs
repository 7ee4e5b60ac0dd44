using System.Text.Json;
using Quantc.Core.Compilation;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;

namespace Quantc.Core.Tests;

public class CompilerTests
{
    private const string Demo = "name: demo\ndescription: scales\npasses:\n  - scale: { factor: 2 }\n";

    [Fact]
    public void ACompileInMemoryReturnsTheModelTheContextAndATypedReport()
    {
        using var m = PipelineTests.Small();
        var compiler = new Compiler(PipelineTests.Registry());
        using var result = compiler.Compile(m, Recipe.Parse(Demo, "demo.yaml"), new CompileOptions { InputName = "small.onnx" });
        Assert.Same(m, result.Model);
        Assert.Null(result.Saved);
        Assert.Null(result.Verify);
        Assert.Contains(m.Metadata, kv => kv.Key == Compiler.RecipeMetadataKey && kv.Value == "demo");
        var t = Assert.Single(result.Timings);
        Assert.Equal(("scale", 2, 3), (t.Pass, t.NodesBefore, t.NodesAfter));
        var r = result.Report;
        Assert.Equal(("small.onnx", "", "demo", "scales"), (r.Input, r.Output, r.Recipe, r.RecipeDescription));
        var p = Assert.Single(r.Passes);
        Assert.Equal(("scale", "FunctionPreserving", 2, 3), (p.Pass, p.Kind, p.NodesBefore, p.NodesAfter));
        Assert.Empty(r.Warnings);
        Assert.Null(r.Verify);
    }

    [Fact]
    public void VerifyingNeedsAnOutput()
    {
        using var m = PipelineTests.Small();
        var held = new Quantc.Core.Data.LoadedData([], null, "none", []);
        Assert.Throws<ArgumentException>(() => new Compiler(PipelineTests.Registry()).Compile(m, Recipe.Parse(Demo, "demo.yaml"), new CompileOptions { HeldOut = held }));
    }

    /// <summary>The JSON names and order quantc compile has always written; optional fields only when set; NaN null, infinities as strings.</summary>
    [Fact]
    public void TheReportJsonKeepsItsNamesOrderAndNumberRules()
    {
        var plain = new LayerReport("a", "fp32 W / fp32 A", "fp32", "per_channel", null, "rtn", "fp32", "static", null, null, [], []);
        var full = new LayerReport("b", "int4 W", "int4", "per_group", 32, "gptq", "uint8", "static", [-1.5f, 2.25f], "minmax", ["smoothed"], ["why"]);
        var report = new CompileReport("in.onnx", "/out.onnx", "demo", "d", ["w"], [new PassReport("scale", "Decision", 1.5, 2, 3, 1.4, 0)], [plain, full], ["log"],
            new CompileVerifyReport("data", "logits", double.PositiveInfinity, 0.12345678, double.NaN, double.NegativeInfinity, 3));
        string json = report.ToJson();
        Assert.EndsWith("}\n", json, StringComparison.Ordinal);
        var root = JsonDocument.Parse(json).RootElement;
        Assert.Equal(["generator", "input", "output", "recipe", "recipe_description", "warnings", "passes", "layers", "log", "verify"], Names(root));
        Assert.Equal("quantc", root.GetProperty("generator").GetString());
        Assert.Equal(["pass", "kind", "ms", "nodes_before", "nodes_after", "cpu_ms", "calibration_ms"], Names(root.GetProperty("passes")[0]));
        Assert.Equal(["name", "summary", "weights", "granularity", "weight_method", "activations", "activation_mode", "transforms", "reasons"], Names(root.GetProperty("layers")[0]));
        Assert.Equal(["name", "summary", "weights", "granularity", "group_size", "weight_method", "activations", "activation_mode", "activation_range", "range_method", "transforms", "reasons"],
            Names(root.GetProperty("layers")[1]));
        var v = root.GetProperty("verify");
        Assert.Equal(["data", "output", "sqnr_db", "cosine", "top1_agreement", "perplexity_original", "perplexity_compiled"], Names(v));
        Assert.Equal("inf", v.GetProperty("sqnr_db").GetString());
        Assert.Equal(0.123457, v.GetProperty("cosine").GetDouble());
        Assert.Equal(JsonValueKind.Null, v.GetProperty("top1_agreement").ValueKind);
        Assert.Equal("-inf", v.GetProperty("perplexity_original").GetString());
        // Without logits metrics the verify object has the output's fields only.
        var noLogits = CompileVerifyReport.From(new VerifyReport(1, [new OutputError("y", 40, 1, 0, 4)], null, []), null);
        Assert.Equal(["data", "output", "sqnr_db", "cosine"], Names(JsonDocument.Parse(ReportJson.Serialize(noLogits)).RootElement));
    }

    /// <summary>quantc verify --json: its names and order, optional fields only when measured, failures from the thresholds.</summary>
    [Fact]
    public void TheVerifyReportKeepsItsNamesAndChecksTheThresholds()
    {
        var report = new VerifyReport(2, [new OutputError("logits", 12.5, 0.99, 0.5, 10) { SqnrVsExactDb = double.PositiveInfinity, OriginalNoiseSqnrDb = 90 }],
            new LogitsMetrics(0.9, 10, 11, 100), [new LayerError(0, "t", "t0", "MatMul", 30, 1, 0.1)]);
        var failures = new VerifyThresholds(MinSqnrDb: 20, MaxPerplexityIncrease: 0.05).FailuresOf(report);
        Assert.Equal(["output 'logits': SQNR 12.50 dB < 20 dB", "perplexity 11.000 > 10.000 × (1 + 0.05)"], failures);
        Assert.Empty(new VerifyThresholds(10, 0.2).FailuresOf(report));
        var outcome = new VerifyOutcome(report, "data", failures);
        Assert.False(outcome.Passed);
        var root = JsonDocument.Parse(outcome.ToJson()).RootElement;
        Assert.Equal(["data", "samples", "outputs", "logits", "layers", "failures", "passed"], Names(root));
        Assert.Equal(["name", "sqnr_db", "cosine", "max_abs_error", "elements", "non_finite", "sqnr_vs_exact_db", "original_float32_noise_sqnr_db"], Names(root.GetProperty("outputs")[0]));
        Assert.Equal("inf", root.GetProperty("outputs")[0].GetProperty("sqnr_vs_exact_db").GetString());
        Assert.Equal(["top1_agreement", "perplexity_original", "perplexity_compiled", "scored_tokens"], Names(root.GetProperty("logits")));
        Assert.Equal(["tensor", "original", "op", "sqnr_db", "cosine", "max_abs_error"], Names(root.GetProperty("layers")[0]));
        var bare = new VerifyOutcome(report with { Logits = null, Outputs = [new OutputError("y", 1, 1, 0, 1)] }, "d", []);
        var b = JsonDocument.Parse(bare.ToJson()).RootElement;
        Assert.Equal(["data", "samples", "outputs", "layers", "failures", "passed"], Names(b));
        Assert.Equal(["name", "sqnr_db", "cosine", "max_abs_error", "elements", "non_finite"], Names(b.GetProperty("outputs")[0]));
    }

    /// <summary>quantc diff --json: names and order; absent names and deltas written as null, infinities as strings.</summary>
    [Fact]
    public void TheDiffReportKeepsItsNames()
    {
        var d = new Quantc.Core.Diff.DiffResult(
            [new Quantc.Core.Diff.NodeDiff(Quantc.Core.Diff.NodeChange.Added, "l0", null, "q", "", "QuantizeLinear", "new")],
            [new Quantc.Core.Diff.InitializerDiff("l0", "w", "w_q", "float", "int8", "[4]", "[4]", 16, 4, null, double.PositiveInfinity, "quantized")],
            [new Quantc.Core.Diff.LayerSummary("l0", "fp32 → int8", 1, 0, 0, 1)], 3, 2, 1);
        var root = JsonDocument.Parse(DiffReport.From(d).ToJson()).RootElement;
        Assert.Equal(["identical", "matched", "layers", "nodes", "initializers"], Names(root));
        Assert.Equal(["provenance", "name", "structure"], Names(root.GetProperty("matched")));
        Assert.Equal(["layer", "summary", "nodes_added", "nodes_removed", "nodes_changed", "initializers_changed"], Names(root.GetProperty("layers")[0]));
        var n = root.GetProperty("nodes")[0];
        Assert.Equal(["change", "layer", "a", "b", "op_a", "op_b", "detail"], Names(n));
        Assert.Equal(("added", JsonValueKind.Null), (n.GetProperty("change").GetString(), n.GetProperty("a").ValueKind));
        var i = root.GetProperty("initializers")[0];
        Assert.Equal(["layer", "a", "b", "dtype_a", "dtype_b", "shape_a", "shape_b", "bytes_a", "bytes_b", "max_abs_delta", "sqnr_db", "detail"], Names(i));
        Assert.Equal((JsonValueKind.Null, "inf"), (i.GetProperty("max_abs_delta").ValueKind, i.GetProperty("sqnr_db").GetString()));
    }

    private static string[] Names(JsonElement e) => [.. e.EnumerateObject().Select(p => p.Name)];
}
