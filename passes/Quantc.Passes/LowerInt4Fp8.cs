using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// LowerInt4Fp8: the layers <c>fireq_weights</c> planned (int4 weights with float8 group scales on t·W, float8 per-token
/// activations) become <c>ai.quantc.MatMulInt4Fp8</c> (custom-ops/README.md: the activations quantized per token inside, the
/// int4 weights dequantized to float8, the output divided by t), or with <c>portable</c> standard ONNX that stock ONNX
/// Runtime runs: per token s = max(absmax, 1e-12)/448, a = Cast(Cast(x / s, float8e4m3fn, saturate), float); the weight
/// DequantizeLinear(int4 blocked, float32 scales holding the float8 values) → Cast to float8e4m3fn → Cast to float (the
/// Cast pair, not a float8 Q/DQ pair, which ONNX Runtime's QDQ fusion would take for an integer one); MatMul(a, w)·(s/t) —
/// the same values as <see cref="Int4Fp8.MatMul"/> up to the float32 summation order of the MatMul. Layers read by the same
/// input share one activation quantization. Everything else in the plan goes to <see cref="LowerQdqPass.LowerAll"/>.
/// </summary>
/// <remarks>
/// With <c>act_group</c> G the portable activations are float8 per 1×G slice of each token (COAT's granularity for the
/// activations it does not feed to a linear layer), and with <c>act_expand</c> each slice is stored with COAT's dynamic range
/// expansion (<see cref="KvFp8.Float8"/>). Both are simulations of a storage format only: an expanded code is (|x|/m)^k, not
/// linear in x, so no float8 GEMM can multiply it; the graph decodes it to float32 before the MatMul (as it does the float8 values
/// today). <c>ai.quantc.MatMulInt4Fp8</c> takes one scale per token, so both options need <c>portable</c>.
/// </remarks>
public sealed class LowerInt4Fp8Pass(bool portable, int actGroup = 0, bool actExpand = false) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<LowerInt4Fp8Options>("lower_int4fp8", PassKind.Lowering,
        "FireQ's int4 weights × float8 per-token activations as ai.quantc.MatMulInt4Fp8, or portable QDQ and float8 Cast pairs",
        o => new LowerInt4Fp8Pass(o.Portable, o.ActGroup, o.ActExpand))
        with { Contract = PassContract.Lowers };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>True for a layer this pass lowers.</summary>
    public static bool Planned(LayerPlan p) => p.WeightFormat == NumberFormat.Int4 && p.ActivationFormat == NumberFormat.Fp8 &&
        p.ActivationMode == ActivationMode.Dynamic && p.QuantizedWeight is { GroupSize: > 0 };

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var shared = new Dictionary<Value, (Value A, Value Scale)>(ReferenceEqualityComparer.Instance);
        var layers = ctx.Map.Linears.Where(l => ctx.Plan.TryGet(l.Name, out var p) && Planned(p)).ToList();
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            var q = plan.QuantizedWeight!;
            if (!portable && l.InFeatures % 2 != 0)
                throw new BadInputException($"lower_int4fp8: {l.Name}: K = {l.InFeatures} is odd (MatMulInt4Fp8 packs two int4 per " +
                    "byte); use portable: true");
            if (portable)
            {
                if (!shared.TryGetValue(l.Input, out var a)) shared[l.Input] = a = Activations(ctx, g, l);
                EmitPortable(ctx, g, l, plan, q, a.A, a.Scale);
                plan.Reasons.Add("lower_int4fp8: portable (int4 DequantizeLinear, float8 Cast pairs, MatMul in float)");
            }
            else
            {
                EmitKernel(ctx, g, l, plan, q);
                plan.Reasons.Add("lower_int4fp8: ai.quantc.MatMulInt4Fp8");
            }
            plan.LoweredBy = Info.Name;
        }
        ctx.Log.Add(layers.Count == 0
            ? "lower_int4fp8: no layer planned as int4 weights × float8 per-token activations (run fireq_weights first)"
            : $"lower_int4fp8: {layers.Count} layers as {(portable ? "portable QDQ with float8 Cast pairs" : "ai.quantc.MatMulInt4Fp8")}" +
                (portable ? $", {shared.Count} {ActivationText} activation quantizations" : ""));
        if (actGroup > 0 && layers.Count > 0)
            ctx.Log.Add($"lower_int4fp8: activations per 1×{actGroup} slice{(actExpand ? " with COAT's dynamic range expansion" : "")}" +
                " — a storage format, simulated: the slices are decoded to float32 before each MatMul (no float8 GEMM multiplies them)");
        LowerQdqPass.LowerAll(ctx);
    }

    private string ActivationText => actGroup == 0 ? (actExpand ? "per-token expanded float8" : "per-token")
        : $"1×{actGroup}{(actExpand ? " expanded" : "")} float8";

    // The per-token float8 activation (a, s), or with act_group / act_expand the decoded slices (a, 1): x reshaped to
    // [..., K/G, G], each slice through KvFp8.Float8, reshaped back. A K that G does not divide keeps the per-token form (logged).
    private (Value A, Value Scale) Activations(PassContext ctx, Graph g, LinearLayer l)
    {
        if (actGroup == 0 && !actExpand) return Fp8PerToken(ctx, g, l);
        int group = actGroup == 0 ? (int)l.InFeatures : actGroup;
        if (l.InFeatures % group != 0)
        {
            ctx.Log.Add($"lower_int4fp8: {l.Name}: K = {l.InFeatures} is not a multiple of act_group {group}: per-token float8 kept");
            return Fp8PerToken(ctx, g, l);
        }
        var x = l.Input;
        var e = new Emitter(g, GraphOrder.FirstUser(g, x)!, l.Name + "/act_fp8");
        var rank = x.Shape?.Length ?? 3;
        var split = e.Reshape(x, [.. Enumerable.Repeat(0L, rank - 1), l.InFeatures / group, group], "/split");
        var a = e.Reshape(KvFp8.Float8(e, split, actExpand), [.. Enumerable.Repeat(0L, rank - 1), l.InFeatures], "/merge");
        ctx.Provenance.Record(a.Name, x.Name);
        return (a, e.Float("_unit_scale", 1f));
    }

    /// <summary>(a, s) for x: s = max(absmax of the token, 1e-12)/448 [..., 1], a = float(fp8(x / s)).</summary>
    private static (Value A, Value Scale) Fp8PerToken(PassContext ctx, Graph g, LinearLayer l)
    {
        var x = l.Input;
        var e = new Emitter(g, GraphOrder.FirstUser(g, x)!, l.Name + "/act_fp8");
        var s = e.Op("Div", "_scale", e.RowAbsMax(x), e.Float("_max", Int4Fp8.Fp8Max));
        var a = CastPair(e, e.Op("Div", "_div", x, s), "");
        ctx.Provenance.Record(a.Name, x.Name);
        return (a, s);
    }

    /// <summary>The options of <see cref="LowerInt4Fp8Pass"/>.</summary>
    public sealed record LowerInt4Fp8Options : PassOptions
    {
        [Option("standard ONNX ops only: int4 DequantizeLinear, float8 Cast pairs and a float MatMul instead of ai.quantc.MatMulInt4Fp8")]
        public bool Portable { get; init; }

        [Option("portable: float8 activations per 1×G slice of each token instead of per token (0: per token)", Min = 0)]
        public int ActGroup { get; init; }

        [Option("portable: float8 activations with COAT's dynamic range expansion per slice (simulated storage format)")]
        public bool ActExpand { get; init; }

        public override string? Check() => (ActGroup > 0 || ActExpand) && !Portable
            ? "act_group and act_expand need portable: true (ai.quantc.MatMulInt4Fp8 multiplies float8 codes with one scale per " +
                "token; an expanded code is not linear in x)"
            : ActGroup is > 0 and < 8 ? $"parameter 'act_group' = {ActGroup} must be 0 or at least 8" : null;
    }

    /// <summary>float(fp8(x)): Cast to float8e4m3fn (saturating) and back.</summary>
    internal static Value CastPair(Emitter e, Value x, string suffix)
    {
        var to8 = e.Node("Cast", suffix + "_to_fp8", x);
        to8.SetAttribute("to", (long)DT.Float8E4M3Fn);
        to8.SetAttribute("saturate", 1L);
        var back = e.Node("Cast", suffix + "_to_float", to8.Output);
        back.SetAttribute("to", (long)DT.Float);
        return back.Output;
    }

    private static void EmitPortable(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan, QuantizedWeight q, Value a, Value s)
    {
        int k = q.K, n = q.N, groups = q.Groups;
        // Ours: values [N, K], scales [N, groups]. The MatMul's weight: [K, N] int4 blocked along axis 0, scales [groups, N].
        var packed = new byte[(k * n + 1) / 2];
        var qv = q.Values;
        for (int c = 0; c < n; c++)
            for (int j = 0; j < k; j++)
            {
                int i = j * n + c;
                packed[i >> 1] |= (byte)((qv[c * k + j] & 0xF) << ((i & 1) * 4));
            }
        var sc = new float[groups * n];
        for (int c = 0; c < n; c++) for (int gi = 0; gi < groups; gi++) sc[gi * n + c] = q.Scales[c * groups + gi];
        var e = new Emitter(g, l.Node, l.Name + "/w4f8");
        var wq = g.AddInitializer(Tensor.FromBytes(g.UniqueName(l.Weight.Name + "_int4"), (int)DT.Int4, [k, n], packed));
        var ws = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Weight.Name + "_scale"), [groups, n], sc));
        var dq = e.Node("DequantizeLinear", "_weight_dq", wq, ws);
        dq.SetAttribute("axis", 0L);
        dq.SetAttribute("block_size", (long)q.GroupSize);
        var w8 = CastPair(e, dq.Output, "_weight");
        var mm = e.Op("MatMul", "_matmul", a, w8);
        var rowScale = plan.WeightExponent == 0 ? s : e.Op("Mul", "_inv_t", s, e.Float("_inv_t", MathF.ScaleB(1f, -plan.WeightExponent)));
        Replace(g, l, e, mm, rowScale);
        ctx.Provenance.Record(wq.Name, l.Weight.Name);
    }

    private static void EmitKernel(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan, QuantizedWeight q)
    {
        ctx.Model.SetOpset(CustomOps.Domain, 1);
        int k = q.K, n = q.N;
        var w = new Int4Fp8Weight(q, plan.WeightExponent, 0, 0, -1);
        var b = g.AddInitializer(Tensor.FromBytes(g.UniqueName(l.Weight.Name + "_int4"), (int)DT.Uint8, [n, (k + 1) / 2],
            Int4Packing.PackPairs(q.Values, n, k)));
        var bs = g.AddInitializer(Tensor.FromBytes(g.UniqueName(l.Weight.Name + "_scale_fp8"), (int)DT.Float8E4M3Fn, [n, q.Groups],
            w.ScaleBytes()));
        var e = new Emitter(g, l.Node, l.Name + "/w4f8");
        var mm = e.Node("MatMulInt4Fp8", CustomOps.Domain, "_kernel", l.Input, b, bs);
        mm.SetAttribute("group_size", (long)q.GroupSize);
        mm.SetAttribute("t_exponent", (long)plan.WeightExponent);
        Replace(g, l, e, mm.Output, null);
        ctx.Provenance.Record(b.Name, l.Weight.Name);
    }

    /// <summary>The layer's MatMul/Gemm replaced by <paramref name="y"/> (times <paramref name="scale"/> when given, plus a Gemm's bias
    /// C: the map takes Gemms with α = β = 1), whose last value takes over the layer's output name, so that the bias Add, graph outputs
    /// and provenance are unchanged.</summary>
    private static void Replace(Graph g, LinearLayer l, Emitter e, Value y, Value? scale)
    {
        if (scale is not null) y = e.Op("Mul", "_token_scale", y, scale);
        if (l.Node.OpType == "Gemm" && l.Node.Inputs.Count > 2 && l.Node.Inputs[2] is { } c) y = e.Op("Add", "_gemm_bias", y, c);
        g.ReplaceValue(l.Node.Output, y);
        g.RemoveNode(l.Node);
    }
}
