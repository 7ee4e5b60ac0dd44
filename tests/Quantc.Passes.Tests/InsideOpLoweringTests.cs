using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// Work the lowerings move inside quantc's ops, run in ONNX Runtime against the separate nodes: lower_w4a8's fold_hadamard
/// (QuaRot's online Hadamard R4 and MatMulInt4Int8 as one HadamardMatMulInt4Int8) and lower_mamba's quantize_inside
/// (MatMulInt8 on a float A).
/// </summary>
public sealed class InsideOpLoweringTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-inside-op");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>
    /// quarot-w4a8's passes. The tiny llama's down_proj (K = 344) has no MatMulInt4Int8 (K is not a multiple of 64), so the
    /// online Hadamard also goes on o_proj's input (K = the hidden size): both Hadamard nodes exist, one foldable.
    /// </summary>
    private Model CompileQuarot(string lowering, out Core.Compilation.CompileResult result)
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
        m.Graph.AllNodes().Where(n => n.Is(LowerW4A8Pass.HadamardOp, "ai.quantc")).ToList();

    /// <summary>
    /// By default every Hadamard read only by a MatMulInt4Int8 goes into the op (o_proj's, one per layer), the others stay
    /// (down_proj's, whose layer is QDQ), and every output of the model (logits and the KV cache) is bit-identical to the graph
    /// compiled with fold_hadamard: false, which keeps the separate nodes.
    /// </summary>
    [Fact]
    public void FoldedHadamardIsBitIdenticalToTheSeparateNode()
    {
        using var separate = CompileQuarot("lower_w4a8: { fold_hadamard: false }", out var separateResult);
        using var folded = CompileQuarot("lower_w4a8", out var foldedResult);
        int layers = separate.Graph.AllNodes().Count(n => n.Name.Contains("o_proj", StringComparison.Ordinal) && n.OpType == "MatMulInt4Int8");
        Assert.True(layers >= 2, $"{layers} o_proj MatMulInt4Int8 nodes");
        Assert.Empty(Folded(separate));
        Assert.Equal(layers, Folded(folded).Count);
        Assert.All(Folded(folded), n => Assert.Equal(0, n.GetInt("normalize", 1)));  // online_hadamard's unnormalised H
        // the fold is an op type, never MatMulInt4Int8's attribute (an older library would ignore that and skip the transform)
        Assert.DoesNotContain(folded.Graph.AllNodes(),
            n => n.GetAttribute("hadamard") is not null || n.GetAttribute("hadamard_normalize") is not null);
        Assert.Equal(Hadamards(separate).Count - layers, Hadamards(folded).Count);
        Assert.NotEmpty(Hadamards(folded));  // down_proj's: its layer is not a MatMulInt4Int8
        // inspect lists the folded layers among the quantized ones, as many as without the fold
        var listed = Core.Inspection.QuantizedLayers.Find(folded);
        Assert.Equal(layers, listed.Count(l => l.Op == "ai.quantc." + LowerW4A8Pass.HadamardOp && l.Name.EndsWith("o_proj", StringComparison.Ordinal)));
        Assert.Equal(Core.Inspection.QuantizedLayers.Find(separate).Count, listed.Count);
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
        ExactOutputs.AssertEqual(pa, OrtRuns.Outputs(sb, prefill), "prefill", log);
        ExactOutputs.AssertEqual(OrtRuns.Outputs(sa, decode), OrtRuns.Outputs(sb, decode), "decode", log);
    }

    private Model CompileQuamba(string lowering, out Core.Compilation.CompileResult result)
    {
        string recipe = Builtins.Recipes["quamba"].Replace("- lower_mamba", "- " + lowering, StringComparison.Ordinal);
        using var m = TestCompiler.TinyReference(_dir, "mamba");
        var calibration = DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 8 }).Samples;
        return TestCompiler.CompileAndReload(_dir, m, recipe, calibration, out result);
    }

    /// <summary>The MatMulInt8 nodes whose A no int8 producer (QuantizeLinear, HadamardQuantizeInt8, the scan's y_q) writes.</summary>
    private static List<Node> FloatInputMatMulInt8(Model m) => m.Graph.AllNodes()
        .Where(n => n.Is("MatMulInt8", "ai.quantc") && n.Inputs[0]!.Producer is { } p && !p.Is("QuantizeLinear") &&
            !p.Is("HadamardQuantizeInt8", "ai.quantc") && !p.Is("QSelectiveScan", "ai.quantc")).ToList();

    /// <summary>
    /// Quamba on the tiny mamba: by default the MatMulInt8 whose input no kernel quantizes yet (in_proj, on the norm's output)
    /// takes the float input, so its QuantizeLinear leaves the graph; every output is bit-identical to quantize_inside: false.
    /// </summary>
    [Fact]
    public void QuantizingInsideMatMulInt8IsBitIdenticalToQuantizeLinear()
    {
        using var separate = CompileQuamba("lower_mamba: { quantize_inside: false }", out var separateResult);
        using var inside = CompileQuamba("lower_mamba", out var insideResult);
        foreach (var l in insideResult.Context.Log.Where(l => l.StartsWith("lower_mamba: ", StringComparison.Ordinal))) log.WriteLine(l);
        int count = FloatInputMatMulInt8(inside).Count;
        Assert.True(count >= 4, $"{count} MatMulInt8 nodes with a float A");  // in_proj of each of the 4 layers at least
        Assert.Empty(FloatInputMatMulInt8(separate));
        int Quantizes(Model m) => m.Graph.AllNodes().Count(n => n.Is("QuantizeLinear"));
        Assert.Equal(Quantizes(separate) - count, Quantizes(inside));
        Assert.Contains(insideResult.Context.Log, l => l.Contains($"{count} of them quantizing their float32 input", StringComparison.Ordinal));
        Assert.Contains(separateResult.Context.Log, l => l.Contains("0 of them quantizing", StringComparison.Ordinal));

        var samples = DataLoader.Load(separate, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SplitDocuments = false, SequenceLength = 48, MaxSamples = 2 }).Samples;
        using var sa = OrtModel.CreateSession(separate);
        using var sb = OrtModel.CreateSession(inside);
        foreach (var sample in samples) ExactOutputs.AssertEqual(OrtRuns.Outputs(sa, sample), OrtRuns.Outputs(sb, sample), "prefill", log);
    }
}
