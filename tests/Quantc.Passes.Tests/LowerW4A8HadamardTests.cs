using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>lower_w4a8's fold_hadamard: QuaRot's online Hadamard (R4) inside MatMulInt4Int8, run in ONNX Runtime.</summary>
public sealed class LowerW4A8HadamardTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-w4a8-hadamard");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>
    /// quarot-w4a8's passes. The tiny llama's down_proj (K = 344) has no MatMulInt4Int8 (K is not a multiple of 64), so the
    /// online Hadamard also goes on o_proj's input (K = the hidden size): both Hadamard nodes exist, one foldable.
    /// </summary>
    private Model Compile(string lowering, out Core.Compilation.CompileResult result)
    {
        string recipe = $$"""
            passes:
              - fold_norm: { untie: true }
              - rotate_residual: { seed: 0 }
              - rotate_head: { seed: 1 }
              - rotate_qk
              - online_hadamard: { layers: "(o|down)_proj$" }
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
              - weights: { method: gptq }
              - {{lowering}}
              - fuse_norm
              - fuse_rope
              - fuse_attention
              - fuse_projections
            """;
        using var m = TestCompiler.TinyReference(_dir);
        return TestCompiler.CompileAndReload(_dir, m, recipe, OrtRuns.Calibration(m, 4), out result);
    }

    private static List<Node> Hadamards(Model m) => m.Graph.AllNodes().Where(n => n.Is("Hadamard", "ai.quantc")).ToList();

    private static List<Node> Folded(Model m) =>
        m.Graph.AllNodes().Where(n => n.OpType == "MatMulInt4Int8" && n.GetInt("hadamard", 0) == 1).ToList();

    /// <summary>
    /// By default every Hadamard read only by a MatMulInt4Int8 goes into the op (o_proj's, one per layer), the others stay
    /// (down_proj's, whose layer is QDQ), and every output of the model (logits and the KV cache) is bit-identical to the graph
    /// compiled with fold_hadamard: false, which keeps the separate nodes.
    /// </summary>
    [Fact]
    public void FoldedHadamardIsBitIdenticalToTheSeparateNode()
    {
        using var separate = Compile("lower_w4a8: { fold_hadamard: false }", out var separateResult);
        using var folded = Compile("lower_w4a8", out var foldedResult);
        int layers = separate.Graph.AllNodes().Count(n => n.Name.Contains("o_proj", StringComparison.Ordinal) && n.OpType == "MatMulInt4Int8");
        Assert.True(layers >= 2, $"{layers} o_proj MatMulInt4Int8 nodes");
        Assert.Empty(Folded(separate));
        Assert.Equal(layers, Folded(folded).Count);
        Assert.All(Folded(folded), n => Assert.Equal(0, n.GetInt("hadamard_normalize", 1)));  // online_hadamard's unnormalised H
        Assert.Equal(Hadamards(separate).Count - layers, Hadamards(folded).Count);
        Assert.NotEmpty(Hadamards(folded));  // down_proj's: its layer is not a MatMulInt4Int8
        Assert.Contains(foldedResult.Context.Log, l => l.Contains($"{layers} of {layers} ai.quantc.Hadamard inputs folded", StringComparison.Ordinal));
        Assert.Contains(separateResult.Context.Log, l => l.Contains("0 of", StringComparison.Ordinal) &&
            l.Contains("(fold_hadamard: false)", StringComparison.Ordinal));

        // Prefill (M = 48 rows per op) and one decode step on the prefill's cache (M = 1: the GEMV path), both models fed the same
        // inputs (their caches are in the same rotated basis); every output compared bit for bit.
        var tokens = OrtRuns.EvalTokens(separate, 1, 48)[0];
        using var sa = OrtModel.CreateSession(separate);
        using var sb = OrtModel.CreateSession(folded);
        var prefill = CalibrationInputs.FromTokens(separate.Graph, tokens);
        var pa = OrtRuns.Outputs(sa, prefill);
        var decode = OrtRuns.DecodeStep(tokens[^1], tokens.Length, pa);
        foreach (var (step, sample) in new[] { ("prefill", prefill), ("decode", decode) })
        {
            var oa = step == "prefill" ? pa : OrtRuns.Outputs(sa, sample);
            var ob = OrtRuns.Outputs(sb, sample);
            Assert.True(oa.Count > 1);
            foreach (var (name, va) in oa)
            {
                double err = va.Zip(ob[name]).Max(p => Math.Abs((double)p.First - p.Second));
                log.WriteLine($"{step} {name}: max |err| {err:G3} over {va.Length} elements");
                Assert.True(err == 0 && va.Length > 0, $"{step} {name}: max |err| {err:G3}");
            }
        }
    }
}
