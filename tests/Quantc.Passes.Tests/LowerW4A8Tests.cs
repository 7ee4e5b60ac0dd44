using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>lower_w4a8's two forms of the per-token activation quantization, run in ONNX Runtime (libquantc_ops registered).</summary>
public sealed class LowerW4A8Tests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-w4a8");

    public void Dispose() => _dir.Delete(recursive: true);

    private static (IReadOnlyList<CalibrationSample> Samples, IReadOnlyList<long[]>? Tokens) Data(Model m, string file, int n) =>
        DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, file),
            new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = n }) is var d ? (d.Samples, d.Tokens) : default;

    private Model Compile(bool inside, out Core.Compilation.CompileResult result, string after = "")
    {
        string recipe = $$"""
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
              - weights: { method: rtn }
              - lower_w4a8: { quantize_inside: {{(inside ? "true" : "false")}} }
            {{after}}
            """;
        using var m = TestCompiler.TinyReference(_dir);
        return TestCompiler.CompileAndReload(_dir, m, recipe, Data(m, "calib.txt", 4).Samples, out result);
    }

    /// <summary>
    /// With quantize_inside (the default) MatMulInt4Int8 reads the float activations and quantizes them per token itself: the
    /// Abs/ReduceMax/Max/Div/Div/QuantizeLinear chains and the per-token Mul are gone from the graph, and every output of the
    /// model (logits and the KV cache) is bit-identical to the form that quantizes with ONNX ops.
    /// </summary>
    [Fact]
    public void QuantizingInsideTheOpIsBitIdenticalToTheOnnxOps()
    {
        using var ops = Compile(false, out var opsResult);
        using var inside = Compile(true, out var insideResult);
        var opsNodes = ops.Graph.AllNodes().ToList();
        var insideNodes = inside.Graph.AllNodes().ToList();
        var opsMatMuls = opsNodes.Where(n => n.OpType == "MatMulInt4Int8").ToList();
        var insideMatMuls = insideNodes.Where(n => n.OpType == "MatMulInt4Int8").ToList();
        Assert.True(insideMatMuls.Count >= 20, $"only {insideMatMuls.Count} MatMulInt4Int8 nodes");
        Assert.Equal(opsMatMuls.Count, insideMatMuls.Count);
        Assert.All(opsMatMuls, n => Assert.Equal("QuantizeLinear", n.Inputs[0]!.Producer?.OpType));
        Assert.All(insideMatMuls, n => Assert.NotEqual("QuantizeLinear", n.Inputs[0]!.Producer?.OpType));
        Assert.Contains(opsNodes, n => n.Name.Contains("/act_q8", StringComparison.Ordinal));
        Assert.DoesNotContain(insideNodes, n =>
            n.Name.Contains("/act_q8", StringComparison.Ordinal) || n.Name.EndsWith("/token_scale", StringComparison.Ordinal));
        int quantizedInputs = opsMatMuls.Select(n => n.Inputs[0]!).Distinct().Count();
        Assert.True(opsNodes.Count - insideNodes.Count >= 6 * quantizedInputs + opsMatMuls.Count,
            $"{opsNodes.Count} → {insideNodes.Count} nodes for {quantizedInputs} quantized inputs and {opsMatMuls.Count} layers");
        Assert.Contains(insideResult.Context.Log,
            l => l.Contains($"{insideMatMuls.Count} of them quantizing their float32 activations", StringComparison.Ordinal));
        Assert.Contains(opsResult.Context.Log, l => l.Contains("0 of them quantizing", StringComparison.Ordinal));

        var (samples, tokens) = Data(ops, "eval.txt", 2);
        var r = Verifier.Run(ops, inside, samples, tokens, new VerifyOptions { PerLayer = false });
        foreach (var o in r.Outputs) log.WriteLine($"{o.Name}: max |err| {o.MaxAbsError:G3} over {o.Elements} elements");
        Assert.True(r.Outputs.Count > 1);
        Assert.All(r.Outputs, o => Assert.True(o.MaxAbsError == 0 && o.Elements > 0, $"{o.Name}: max |err| {o.MaxAbsError:G3}"));
    }

    /// <summary>
    /// fuse_projections stacks the MatMulInt4Int8 of q/k/v and of gate/up (one A each) into one op and a Split: in both forms of
    /// the quantization, fewer MatMulInt4Int8 nodes and bit-identical outputs. (Its SwiGLU step, which computes the sigmoid inside
    /// the op and so only to float rounding, is off here: SwiGluFusionTests.)
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FusedProjectionsAreBitIdentical(bool inside)
    {
        using var separate = Compile(inside, out _);
        using var fused = Compile(inside, out var result, "  - fuse_projections: { swiglu: false }");
        int Count(Model m) => m.Graph.AllNodes().Count(n => n.OpType == "MatMulInt4Int8");
        // Per layer of the tiny llama: q, k, v, o, gate, up as MatMulInt4Int8 (down_proj's K = 344 stays QDQ) → qkv, o, gate+up.
        Assert.True(Count(separate) >= 24, $"{Count(separate)} MatMulInt4Int8 before fusing");
        Assert.Equal(Count(separate) / 2, Count(fused));
        Assert.Contains(result.Context.Log,
            l => l.Contains("q_proj+k_proj+v_proj", StringComparison.Ordinal) && l.Contains("MatMulInt4Int8", StringComparison.Ordinal));
        var (samples, tokens) = Data(separate, "eval.txt", 2);
        var r = Verifier.Run(separate, fused, samples, tokens, new VerifyOptions { PerLayer = false });
        Assert.All(r.Outputs, o => Assert.True(o.MaxAbsError == 0 && o.Elements > 0, $"{o.Name}: max |err| {o.MaxAbsError:G3}"));
    }
}
