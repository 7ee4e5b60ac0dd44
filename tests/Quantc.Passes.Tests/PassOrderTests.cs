using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Models;
using Quantc.Onnx;

namespace Quantc.Passes.Tests;

/// <summary>
/// Issue 22 item 8: each pass states what it needs, provides and makes stale (<see cref="PassContract"/>); a recipe in the
/// wrong order is refused before any work with the reason, and the summary counts what the output contains.
/// </summary>
public sealed class PassOrderTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-order");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Refusal(string passes) =>
        Assert.Throws<BadInputException>(() => TestCompiler.Compiler.Instantiate(Recipe.Parse($"passes:\n{passes}", "r.yaml"))).Message;

    [Fact]
    public void EveryBuiltInRecipeIsInOrder()
    {
        foreach (var name in Builtins.Recipes.Keys) Assert.NotEmpty(TestCompiler.Compiler.Instantiate(Builtins.Recipe(name)));
    }

    [Fact]
    public void LoweringBeforeTheWeightsAreRoundedIsRefused() =>
        Assert.Matches(@"^r\.yaml: pass 2 \(lower_qdq\) needs the rounded weights, which no earlier pass provides \(put (\w+ or )*weights( or \w+)* " +
            @"before it\)$", Refusal("  - quantize\n  - lower_qdq\n  - weights\n"));

    [Fact]
    public void DecisionsBeforeQuantizeAreRefused() =>
        Assert.Matches(@"^r\.yaml: pass 1 \(weights\) needs the layers' quantization formats, which no earlier pass provides \(put " +
            @"(\w+ or )*quantize( or \w+)* before it\)$", Refusal("  - weights\n  - quantize\n  - lower_qdq\n"));

    [Fact]
    public void ARewriteAfterTheWeightsWereRoundedIsRefused() =>
        Assert.Equal("r.yaml: pass 3 (smooth) changes the model after pass 2 (weights) produced the rounded weights, which would " +
            "then be stale: put smooth before pass 2 (weights)", Refusal("  - quantize\n  - weights\n  - smooth\n  - lower_qdq\n"));

    [Fact]
    public void ARewriteAfterTheRangesWereCalibratedIsRefused() =>
        Assert.Contains("changes the model after pass 2 (ranges) produced the activation ranges",
            Refusal("  - quantize\n  - ranges\n  - rotate_head\n  - weights\n  - lower_qdq\n"), StringComparison.Ordinal);

    [Fact]
    public void ARewriteOfLoweredLayersIsRefused() =>
        Assert.Equal("r.yaml: pass 4 (smooth) needs the float linear layers, but pass 3 (lower_qdq) has already lowered them: put " +
            "smooth before pass 3 (lower_qdq)", Refusal("  - quantize\n  - weights\n  - lower_qdq\n  - smooth\n"));

    /// <summary>Decisions that no pass lowers are allowed (a plan may be compiled to be inspected), and said.</summary>
    [Fact]
    public void DecisionsThatNoPassLowersAreANotice()
    {
        var path = Path.Combine(_dir.FullName, "llama.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        using var m = Model.Load(path);
        using var result = TestCompiler.Compile(m, "passes:\n  - quantize: { activations: fp32 }\n  - weights\n");
        Assert.Contains(result.Context.Notices, n => n.StartsWith("quantize decided formats, but no later pass of the recipe lowers " +
            "them: the layers stay float in the output (add ", StringComparison.Ordinal));
        Assert.All(result.Context.Plan.Layers, p => Assert.Null(p.LoweredBy));
    }

    [Fact]
    public void FusionsAndKvQuantizationMayFollowTheLowering() =>
        Assert.NotEmpty(TestCompiler.Compiler.Instantiate(Recipe.Parse(
            "passes:\n  - quantize\n  - weights\n  - lower_qdq\n  - quantize_kv\n  - fuse_norm\n  - fuse_attention\n", "r.yaml")));

    /// <summary>A layer counts as quantized only once a lowering put it in the graph: lower_matmulnbits takes the MatMuls whose
    /// block size it can store, and with no lower_qdq after it the others stay float, which the plan says.</summary>
    [Fact]
    public void OnlyLoweredLayersCountAsQuantized()
    {
        var path = Path.Combine(_dir.FullName, "llama.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        using var m = Model.Load(path);
        using var result = TestCompiler.Compile(m, """
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 8, activations: fp32 }
              - weights
              - lower_matmulnbits
            """);
        var plans = result.Context.Plan.Layers.Where(p => p.WeightFormat == NumberFormat.Int4).ToList();
        Assert.True(plans.Count >= 28, $"{plans.Count} int4 layers");
        Assert.All(result.Context.Plan.Layers, p => Assert.Null(p.LoweredBy));          // block 8 < 16: MatMulNBits takes none of them
        Assert.Contains(result.Context.Log, l => l.Contains("is not a power of two ≥ 16", StringComparison.Ordinal));

        using var m2 = Model.Load(path);
        using var r2 = TestCompiler.Compile(m2, "w8a8-dynamic");
        Assert.All(r2.Context.Plan.Layers.Where(p => p.WeightFormat.IsReduced), p => Assert.Equal("lower_qdq", p.LoweredBy));
    }
}
