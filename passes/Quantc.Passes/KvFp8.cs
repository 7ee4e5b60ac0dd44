using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;

namespace Quantc.Passes;

/// <summary>FireQ's attention-side rounding in float ops (quantize_kv's symmetric cache and float8 queries).</summary>
internal static class KvFp8
{
    /// <summary>
    /// x̂ = clip(round(x/s), −2^(bits−1), 2^(bits−1) − 1)·s per last-axis group (one head), s = absmax·clip/(2^(bits−1) − 1), rounded
    /// to float8 e4m3fn and floored at 2^-9 with <paramref name="fp8Scales"/> (else floored at 1e-12).
    /// </summary>
    public static Value Symmetric(Emitter e, Value xs, int bits, double clipRatio, bool fp8Scales)
    {
        int levels = (1 << (bits - 1)) - 1;
        Value m = e.ReduceLast("ReduceMax", "_absmax", e.Op("Abs", "_abs", xs), e.Int64s("_axes", -1L));
        if (clipRatio < 1) m = e.Op("Mul", "_clip_ratio", m, e.Float("_ratio", (float)clipRatio));
        Value s = e.Op("Div", "_scale", m, e.Float("_levels", levels));
        if (fp8Scales) s = LowerInt4Fp8Pass.CastPair(e, s, "_scale");
        s = e.Op("Max", "_scale_floor", s, e.Float("_floor", fp8Scales ? Int4Fp8.ScaleFloor : 1e-12f));
        var rounded = e.Op("Round", "_round", e.Op("Div", "_div", xs, s));
        var q = e.Op("Clip", "_clip", rounded, e.Float("_lo", -levels - 1), e.Float("_hi", levels));
        return e.Op("Mul", "_dq", q, s);
    }

    /// <summary>The query at <paramref name="slot"/> rounded to float8 e4m3fn per token and head: s = max(absmax, 1e-12)/448, q̂ =
    /// fp8(q/s)·s.</summary>
    public static void Queries(PassContext ctx, Graph g, Use slot, long d, bool oneHeadLast, string prefix)
    {
        var x = slot.Node.Inputs[slot.InputIndex]!;
        var e = new Emitter(g, slot.Node, g.UniqueName(prefix));
        Value xs = oneHeadLast ? x : e.Reshape(x, [0, 0, -1, d], "/split");
        var s = e.Op("Div", "_scale", e.RowAbsMax(xs), e.Float("_max", Int4Fp8.Fp8Max));
        Value y = e.Op("Mul", "_dq", LowerInt4Fp8Pass.CastPair(e, e.Op("Div", "_div", xs, s), ""), s);
        if (!oneHeadLast) y = e.Reshape(y, [0, 0, -1], "/merge");
        ctx.Provenance.Record(y.Name, x.Name);
        slot.Node.SetInput(slot.InputIndex, y);
    }
}
