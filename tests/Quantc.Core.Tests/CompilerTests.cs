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
        var report = new CompileReport("in.onnx", "/out.onnx", "demo", "d", ["w"], [new PassReport("scale", "Decision", 1.5, 2, 3)], [plain, full], ["log"],
            new CompileVerifyReport("data", "logits", double.PositiveInfinity, 0.12345678, double.NaN, double.NegativeInfinity, 3));
        string json = report.ToJson();
        Assert.EndsWith("}\n", json, StringComparison.Ordinal);
        var root = JsonDocument.Parse(json).RootElement;
        Assert.Equal(["generator", "input", "output", "recipe", "recipe_description", "warnings", "passes", "layers", "log", "verify"], Names(root));
        Assert.Equal("quantc", root.GetProperty("generator").GetString());
        Assert.Equal(["pass", "kind", "ms", "nodes_before", "nodes_after"], Names(root.GetProperty("passes")[0]));
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

    private static string[] Names(JsonElement e) => [.. e.EnumerateObject().Select(p => p.Name)];
}
