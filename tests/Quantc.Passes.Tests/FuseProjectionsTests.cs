using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>fuse_projections: q/k/v and gate/up become one MatMul each on concatenated weights, with the same outputs, and ONNX Runtime still fuses the QDQ.</summary>
public sealed class FuseProjectionsTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-fuse-projections");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Compile(string flavor, string recipe, out PassContext ctx)
    {
        var path = Path.Combine(_dir.FullName, $"llama-{flavor}-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, flavor, path);
        using var m = Model.Load(path);
        ctx = OrtRuns.RunRecipe(m, recipe, OrtRuns.Calibration(m, 4));
        var outPath = Path.Combine(_dir.FullName, $"compiled-{Guid.NewGuid():N}.onnx");
        m.Save(outPath);
        return Model.Load(outPath);
    }

    /// <summary>The op histogram of the graph ONNX Runtime runs after its own optimisations.</summary>
    private Dictionary<string, int> OrtOps(Model m)
    {
        var opt = Path.Combine(_dir.FullName, $"ort-{Guid.NewGuid():N}.onnx");
        using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = opt })
        using (OrtModel.CreateSession(m, options: so)) { }
        using var o = Model.Load(opt);
        return o.Graph.Nodes.GroupBy(n => n.OpType).ToDictionary(x => x.Key, x => x.Count());
    }

    public static TheoryData<string, string, string?> Cases => new()
    {
        { "torch", "w4a16-rtn", "MatMulNBits" }, { "torch", "smoothquant", "MatMulIntegerToFloat" },
        { "ortgenai", "w4a16-rtn", "MatMulNBits" }, { "ortgenai", "smoothquant", "MatMulIntegerToFloat" },
        { "torch", "w8a8-dynamic", "MatMulIntegerToFloat" },
        { "torch", "passes: [fuse_norm, fuse_rope, fuse_attention, fuse_projections]", null },
    };

    /// <summary>
    /// The built-in recipe against itself without fuse_projections, on the tiny llama (4 layers): three MatMuls fewer per layer
    /// (q/k/v → 1, gate/up → 1) in our graph and in ONNX Runtime's integer kernels, and every output the same (batch 1, 48 tokens).
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void FewerMatMulsSameOutputs(string flavor, string recipe, string? kernel)
    {
        string yaml = Builtins.Recipes.TryGetValue(recipe, out var builtin) ? builtin : recipe;
        Assert.Contains("fuse_projections", yaml);
        string without = yaml.Replace("\n  - fuse_projections", "", StringComparison.Ordinal).Replace(", fuse_projections", "", StringComparison.Ordinal);
        using var packed = Compile(flavor, yaml, out var ctx);
        using var plain = Compile(flavor, without, out _);
        foreach (var l in ctx.Log.Where(l => l.StartsWith("fuse_projections", StringComparison.Ordinal))) log.WriteLine(l);
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_projections: model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, model.layers.0.self_attn.v_proj →", StringComparison.Ordinal));
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_projections: model.layers.0.mlp.gate_proj, model.layers.0.mlp.up_proj →", StringComparison.Ordinal));
        int MatMuls(Model m) => m.Graph.Nodes.Count(n => n.Is("MatMul"));
        Assert.Equal(MatMuls(plain) - 12, MatMuls(packed));
        // Per-token dynamic layers: one row-scale Mul per packed MatMul, before its Split (7 → 4 per layer).
        int Rescales(Model m) => m.Graph.Nodes.Count(n => n.Is("Mul") && n.Name.Contains("act_dyn_rescale", StringComparison.Ordinal));
        if (recipe.Contains("dynamic", StringComparison.Ordinal))
        {
            Assert.Equal(28, Rescales(plain));
            Assert.Equal(16, Rescales(packed));
        }
        if (kernel is not null)
        {
            var a = OrtOps(plain);
            var b = OrtOps(packed);
            log.WriteLine($"{flavor} {recipe}: ORT runs {a.GetValueOrDefault(kernel)} → {b.GetValueOrDefault(kernel)} {kernel}");
            Assert.Equal(a.GetValueOrDefault(kernel) - 12, b.GetValueOrDefault(kernel));
            // int4 down_proj (K = 344: group size 8, which MatMulNBits does not take) keeps its DequantizeLinear; packing adds none.
            Assert.Equal(a.GetValueOrDefault("DequantizeLinear"), b.GetValueOrDefault("DequantizeLinear"));
        }
        var tokens = OrtRuns.EvalTokens(plain, 1, 48)[0];
        var sample = CalibrationInputs.FromTokens(plain.Graph, tokens);
        using var sa = OrtModel.CreateSession(plain);
        using var sb = OrtModel.CreateSession(packed);
        var oa = OrtRuns.Outputs(sa, sample);
        var ob = OrtRuns.Outputs(sb, sample);
        foreach (var (name, va) in oa)
        {
            double e = OrtRuns.MaxRelErr(va, ob[name]);
            Assert.True(e <= 1e-6, $"{name}: max relative error {e:E3}");
        }
    }

    /// <summary>quantc diff shows the packed layer as one int8 weight made of the three float ones, which are not reported as removed.</summary>
    [Fact]
    public void TheDiffShowsWhatWasPacked()
    {
        var path = Path.Combine(_dir.FullName, $"llama-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        using var original = Model.Load(path);
        using var packed = Compile("torch", Builtins.Recipes["smoothquant"], out _);
        var d = Quantc.Core.Diff.GraphDiff.Compute(original, packed);
        var qkv = Assert.Single(d.Initializers, i => i.Detail == "packed from 3 tensors" && i.Layer == "model.layers.0.self_attn.q_proj+k_proj+v_proj");
        Assert.Equal("model.layers.0.self_attn.q_proj.weight+model.layers.0.self_attn.k_proj.weight+model.layers.0.self_attn.v_proj.weight", qkv.NameA);
        Assert.Equal("int8", qkv.DtypeB);
        Assert.Equal("[128,128] + [128,64] + [128,64]", qkv.ShapeA.Replace(" ", "", StringComparison.Ordinal).Replace("]+[", "] + [", StringComparison.Ordinal));
        Assert.DoesNotContain(d.Initializers, i => i.NameA == "model.layers.0.self_attn.k_proj.weight" && i.Detail == "removed");
        Assert.Contains(d.Layers, l => l.Layer == "model.layers.0.mlp.gate_proj+up_proj" && l.Summary.StartsWith("fp32 → int8 W", StringComparison.Ordinal));
    }

    [Fact]
    public void ProjectionsThatDisagreeStayApart()
    {
        // k_proj kept float (excluded) while q_proj and v_proj get int8 weights behind a DequantizeLinear: q and v fuse, k stays apart.
        using var m = Compile("torch", "passes: [{quantize: {weights: int8, activations: fp32, exclude: ['k_proj$']}}, weights, lower_qdq, fuse_projections]", out var ctx);
        foreach (var l in ctx.Log.Where(l => l.StartsWith("fuse_projections", StringComparison.Ordinal))) log.WriteLine(l);
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_projections: model.layers.0.self_attn.q_proj, model.layers.0.self_attn.v_proj →", StringComparison.Ordinal));
        Assert.DoesNotContain(ctx.Log, l => l.StartsWith("fuse_projections:", StringComparison.Ordinal) && l.Contains("k_proj", StringComparison.Ordinal) && l.Contains('→'));
        Assert.Equal(4, m.Graph.Nodes.Count(n => n.Is("MatMul") && n.Inputs[1]!.IsInitializer));   // the four float k_proj
    }
}
