using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// LowerW4A8: layers planned with int4 blocked weights and int8 per-token dynamic activations become
/// <c>ai.quantc.MatMulInt4Int8</c>: per token s = max|x|/127, A = QuantizeLinear(x / s, 1, int8) (round
/// half to even, saturating), Y = MatMulInt4Int8(A, 1, W_int4, W_scale)·s (+ b) — exact integer sums per
/// group, the per-token scale applied to the output rows (the op takes one A scale, and Y is linear in it).
/// With <c>quantize_inside</c> (the default) the op gets the float32 x itself and does exactly that arithmetic
/// inside (custom-ops/README.md), so the six quantization nodes per input and the Mul per layer are gone and
/// the results are the same bit for bit; without it (or when x is not float32) the quantization is emitted as
/// ONNX ops and layers read by the same input share it. Where the op's schema does not fit (K not a
/// multiple of 64, group size other than 32/64/128, a transposed Gemm weight), and for every layer with
/// <c>portable</c>, the standard lowering of <see cref="LowerQdqPass"/> is used instead (blocked int4
/// DequantizeLinear, per-token fake quantization in float ops), as it is for everything else in the plan.
/// With <c>fold_hadamard</c> (the default, with <c>quantize_inside</c>) an <c>ai.quantc.Hadamard</c> whose output only that
/// layer reads (online_hadamard's QuaRot R4 on down_proj's input) and the layer become one
/// <c>ai.quantc.HadamardMatMulInt4Int8</c> (the Hadamard's <c>normalize</c> kept): the op transforms each row before quantizing
/// it, bit for bit what the two nodes computed, and the Hadamard node leaves the graph.
/// </summary>
public sealed class LowerW4A8Pass(bool portable, bool quantizeInside = true, bool foldHadamard = true) : IPass
{
    /// <summary>The op type of MatMulInt4Int8 with the Hadamard folded in: a type of its own, not an attribute, so that a
    /// libquantc_ops that does not know it fails at session creation instead of running MatMulInt4Int8 without the transform
    /// (ONNX Runtime does not check a custom op's attributes).</summary>
    public const string HadamardOp = "HadamardMatMulInt4Int8";

    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<LowerW4A8Options>("lower_w4a8", PassKind.Lowering,
        "int4 weights × int8 per-token activations as ai.quantc.MatMulInt4Int8 where its schema fits, the rest as lower_qdq",
        o => new LowerW4A8Pass(o.Portable, o.QuantizeInside, o.FoldHadamard))
        with { Contract = PassContract.Lowers };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        if (!portable)
        {
            var quantized = new Dictionary<Value, (Value A, Value Scale)>(ReferenceEqualityComparer.Instance);
            int lowered = 0, inside = 0, folded = 0, hadamardInputs = 0;
            foreach (var l in ctx.Map.Linears)
            {
                if (!ctx.Plan.TryGet(l.Name, out var plan) || plan.WeightFormat != NumberFormat.Int4 ||
                    plan.ActivationFormat != NumberFormat.Int8 || plan.ActivationMode != ActivationMode.Dynamic) continue;
                if (plan.QuantizedWeight is not { } q) continue;
                ctx.ReleaseLayerCopies();   // a spilled weight's integers are read back per layer: collect the copies as they pile up
                string? why = l.InFeatures % 64 != 0 ? $"K = {l.InFeatures} is not a multiple of 64"
                    : q.GroupSize is not (32 or 64 or 128) ? $"group size {q.GroupSize} is not 32, 64 or 128"
                    : l.WeightIsOutByIn ? "a transposed Gemm weight" : null;
                if (why is not null)
                {
                    plan.Reasons.Add($"lower_w4a8: standard QDQ, not MatMulInt4Int8: {why}");
                    continue;
                }
                if (quantizeInside && l.Input.ElementType is 0 or (int)DT.Float)
                {
                    var h = l.Input.Producer is { } p && p.Is("Hadamard", CustomOps.Domain) ? p : null;
                    if (h is not null) hadamardInputs++;
                    if (h is not null && !(foldHadamard && l.Input.Uses.Count == 1 && !l.Input.IsGraphOutput)) h = null;
                    Emit(ctx, g, l, q, null, null, h);
                    inside++;
                    if (h is not null) folded++;
                }
                else
                {
                    if (!quantized.TryGetValue(l.Input, out var a)) quantized[l.Input] = a = QuantizePerToken(ctx, g, l);
                    Emit(ctx, g, l, q, a.A, a.Scale);
                }
                plan.Reasons.Add("lower_w4a8: ai.quantc.MatMulInt4Int8 (int8 per-token activations × int4 blocked weights)");
                plan.LoweredBy = Info.Name;
                lowered++;
            }
            if (lowered > 0)
                ctx.Log.Add($"lower_w4a8: {lowered} layers as ai.quantc.MatMulInt4Int8, {inside} of them quantizing their float32 " +
                    $"activations per token inside the op, {quantized.Count} per-token activation quantizations as ONNX ops; " +
                    $"{folded} of {hadamardInputs} ai.quantc.Hadamard inputs folded into the op (as ai.quantc.{HadamardOp})" +
                    (foldHadamard ? "" : " (fold_hadamard: false)"));
        }
        LowerQdqPass.LowerAll(ctx);   // everything else; removes the float weights left unused
    }

    /// <summary>(A int8, s) for x: s = max(max|x_token|, 1e-12)/127 [..., 1], A = QuantizeLinear(x / s, 1, 0).</summary>
    private static (Value A, Value Scale) QuantizePerToken(PassContext ctx, Graph g, LinearLayer l)
    {
        var x = l.Input;
        var e = new Emitter(g, GraphOrder.FirstUser(g, x)!, l.Name + "/act_q8");
        var m = e.RowAbsMax(x);
        var s = e.Op("Div", "_scale", m, e.Float("_levels", NumberFormat.Int8.SymmetricLevels));
        var one = e.Float("_one", 1f);
        var zp = e.Int8("_zero_point", 0);
        var a = e.Op("QuantizeLinear", "", e.Op("Div", "_div", x, s), one, zp);
        ctx.Provenance.Record(a.Name, x.Name);
        return (a, s);
    }

    /// <summary>MatMulInt4Int8 in place of the layer's MatMul: on (a, s) quantized by the graph, its output times s; or, with
    /// a = null, on the float input, the op quantizing per token itself and its output taking the MatMul's name; with
    /// <paramref name="hadamard"/> (the producer of the layer's input, read by this layer only) HadamardMatMulInt4Int8 on that
    /// Hadamard's input, applying the transform (the Hadamard's normalize), and the Hadamard node removed.</summary>
    private static void Emit(PassContext ctx, Graph g, LinearLayer l, QuantizedWeight q, Value? a, Value? s, Node? hadamard = null)
    {
        ctx.Model.SetOpset(CustomOps.Domain, 1);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        var b = g.AddInitializer(Tensor.FromBytes(g.UniqueName(l.Weight.Name + "_int4"), (int)DT.Uint8, [n, k / 2],
            Int4Packing.PackChunked(q.Values, n, k)));
        var bs = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Weight.Name + "_scale"), [n, q.Groups], q.Scales));
        var one = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Name + "_a_scale"), [], [1f]));
        var e = new Emitter(g, l.Node, l.Name);
        // The op's output (or the product per token) takes over the MatMul's output name, so the bias Add, graph outputs and
        // provenance are unchanged.
        var old = l.Node.Output;
        string name = old.Name;
        g.RenameValueUnique(old, name + "_float");
        var x = hadamard is null ? l.Input : hadamard.Inputs[0]!;
        string op = hadamard is null ? "MatMulInt4Int8" : HadamardOp;
        var mm = a is null
            ? e.NodeOf(op, "/" + op, [x, one, b, bs], CustomOps.Domain, outputNames: [name])
            : e.Node(op, CustomOps.Domain, "/" + op, a, one, b, bs);
        mm.SetAttribute("group_size", (long)q.GroupSize);
        if (hadamard is not null) mm.SetAttribute("normalize", hadamard.GetInt("normalize", 1));
        var y = a is null ? mm.Output : e.NodeOf("Mul", "/token_scale", [mm.Output, s], outputNames: [name]).Output;
        g.ReplaceAllUses(old, y, includeGraphOutputs: true);
        g.RemoveNode(l.Node);
        if (hadamard is not null) g.RemoveNode(hadamard);
        ctx.Provenance.Record(b.Name, l.Weight.Name);
    }
}

/// <summary>lower_w4a8's options.</summary>
public sealed record LowerW4A8Options : PassOptions
{
    [Option("standard ONNX ops only (no ai.quantc kernels): MatMul by a constant Hadamard matrix, QDQ instead of fused integer kernels")]
    public bool Portable { get; init; }

    [Option("MatMulInt4Int8 takes the float32 activations and quantizes them per token itself (bit-identical to the ONNX ops it replaces)")]
    public bool QuantizeInside { get; init; } = true;

    [Option("an ai.quantc.Hadamard read only by a MatMulInt4Int8 (QuaRot's R4) becomes the op's hadamard attribute (bit-identical); " +
        "false keeps the separate node")]
    public bool FoldHadamard { get; init; } = true;
}
