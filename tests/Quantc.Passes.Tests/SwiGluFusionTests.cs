using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// fuse_projections' SwiGLU: a fused gate/up ai.quantc.MatMulInt4Int8 whose outputs feed silu(gate) · up becomes one
/// SwiGluMatMulInt4Int8 (the Split, Sigmoid and two Muls inside), with the same MLP outputs in ONNX Runtime as the separate ops.
/// </summary>
public sealed class SwiGluFusionTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-swiglu");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Recipe(string lowering, string fuse) => $$"""
        passes:
          - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
          - weights: { method: rtn }
          - {{lowering}}
          - fuse_norm
          - fuse_rope
          - fuse_attention
          - {{fuse}}
        """;

    private Model Compile(string lowering, string fuse, out PassContext ctx)
    {
        using var m = TestCompiler.TinyReference(_dir);
        var reloaded = TestCompiler.CompileAndReload(_dir, m, Recipe(lowering, fuse), null, out var result);
        ctx = result.Context;
        return reloaded;
    }

    private static List<Node> Fused(Model m) =>
        m.Graph.AllNodes().Where(n => n.Is(FuseProjectionsPass.SwiGluOp, CustomOps.Domain)).ToList();

    /// <summary>
    /// The tiny llama (4 layers, MLP 344 wide, hidden 128): every layer's gate/up pair fused with its SwiGLU; the MLP output of every
    /// layer (made a graph output in both models) agrees with the separate ops' within float rounding of the sigmoid in layer 0,
    /// at prefill (48 rows: the GEMM) and in a decode step (1 row: the GEMV path). Later layers read activations requantized per
    /// token from slightly different floats, so they are compared by SQNR.
    /// </summary>
    [Fact]
    public void SwiGluInsideMatchesTheSeparateOps()
    {
        using var plain = Compile("lower_w4a8", "fuse_projections: { swiglu: false }", out var plainCtx);
        using var fused = Compile("lower_w4a8", "fuse_projections", out var ctx);
        foreach (var l in ctx.Log.Where(l => l.StartsWith("fuse_projections", StringComparison.Ordinal))) log.WriteLine(l);
        Assert.Empty(Fused(plain));
        Assert.Contains(plainCtx.Log, l => l.Contains("mlp.up_proj keeps its Split: swiglu: false", StringComparison.Ordinal));
        var ops = Fused(fused);
        Assert.Equal(4, ops.Count);
        Assert.All(ops, n => Assert.Equal(0, n.GetInt("gate", -1)));  // the gate's rows stacked first
        Assert.All(ops, n => Assert.Equal(32, n.GetInt("group_size", 0)));
        Assert.DoesNotContain(fused.Graph.AllNodes(), n => n.Is("Sigmoid"));
        // MatMulInt4Int8, Split, Sigmoid and two Muls → one node per layer
        Assert.Equal(plain.Graph.AllNodes().Count() - 4 * 4, fused.Graph.AllNodes().Count());
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_projections: model.layers.0.mlp.gate_proj + model.layers.0.mlp.up_proj → ",
            StringComparison.Ordinal) && l.Contains("gate = first half", StringComparison.Ordinal));
        // inspect lists the fused layer among the quantized ones
        var listed = Core.Inspection.QuantizedLayers.Find(fused);
        Assert.Contains(listed, l => l.Name == "model.layers.0.mlp.gate_proj+up_proj" &&
            l.Op == "ai.quantc." + FuseProjectionsPass.SwiGluOp);
        Assert.Equal(Core.Inspection.QuantizedLayers.Find(plain).Count, listed.Count);

        // Each SwiGLU output keeps the name of the Mul it replaces: the same tensor in both models, made an output of each.
        var names = ops.Select(n => n.Output.Name).ToList();
        foreach (var m in new[] { plain, fused })
            foreach (var name in names) m.Graph.AddOutput(m.Graph.Values.Single(v => v.Name == name));
        var tokens = OrtRuns.EvalTokens(plain, 1, 48)[0];
        using var sa = OrtModel.CreateSession(plain);
        using var sb = OrtModel.CreateSession(fused);
        var prefill = CalibrationInputs.FromTokens(plain.Graph, tokens);
        var pa = OrtRuns.Outputs(sa, prefill);
        var pb = OrtRuns.Outputs(sb, prefill);
        var decode = OrtRuns.DecodeStep(tokens[^1], tokens.Length, pa);
        var da = OrtRuns.Outputs(sa, decode);
        var db = OrtRuns.Outputs(sb, decode);
        foreach (var (phase, a, b) in new[] { ("prefill", pa, pb), ("decode", da, db) })
        {
            double first = OrtRuns.MaxRelErr(a[names[0]], b[names[0]]);
            log.WriteLine($"{phase}: layer 0 MLP output max relative error {first:E2}");
            Assert.True(first <= 1e-5, $"{phase} layer 0: {first:E3}");
            foreach (var name in names.Concat(["logits"]))
            {
                double sqnr = Sqnr(a[name], b[name]);
                log.WriteLine($"{phase}: {name} SQNR {sqnr:F1} dB");
                Assert.True(sqnr > 60, $"{phase} {name}: {sqnr:F1} dB");
            }
        }
    }

    /// <summary>With the activations quantized by ONNX ops (quantize_inside: false) the pair keeps its Split; the log says why.
    /// </summary>
    [Fact]
    public void ActivationsQuantizedOutsideKeepTheSplit()
    {
        using var m = Compile("lower_w4a8: { quantize_inside: false }", "fuse_projections", out var ctx);
        Assert.Empty(Fused(m));
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_projections: model.layers.0.mlp.gate_proj + model.layers.0.mlp.up_proj " +
            "keeps its Split: its activations are quantized by the graph", StringComparison.Ordinal));
    }

    private static double Sqnr(float[] reference, float[] other)
    {
        double s = 0, n = 0;
        for (int i = 0; i < reference.Length; i++) { s += (double)reference[i] * reference[i]; n += Math.Pow(reference[i] - other[i], 2); }
        return n == 0 ? double.PositiveInfinity : 10 * Math.Log10(s / n);
    }
}
