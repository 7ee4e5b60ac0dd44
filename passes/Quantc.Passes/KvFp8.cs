using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;

namespace Quantc.Passes;

/// <summary>The attention-side rounding in float ops: FireQ's symmetric cache and float8 queries, and quantize_kv's float8 caches
/// (plain, or with COAT's dynamic range expansion).</summary>
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

    /// <summary>
    /// float8 e4m3fn per last-axis group (one token's head), as a storage format. Plain (<paramref name="expand"/> false): s =
    /// max(absmax, 1e-12)/448, x̂ = fp8(x/s)·s. COAT's dynamic range expansion (<paramref name="expand"/>): with m the group's
    /// absmax and r = m / (its smallest non-zero magnitude), k = clamp(ln(448/2⁻⁶) / ln r, 1/16, 64) (1 when r ≤ 1.0001), the code
    /// is c = fp8(448·(|x|/m)^k) and x̂ = sign(x)·m·(c/448)^(1/k) — the group's magnitudes fill e4m3's normal range, so the relative
    /// step shrinks by k where the group's range is narrower than e4m3's (the codec of
    /// <see cref="Quantc.Core.Numerics.Reconstruction.ExpandedFp8Vector"/>, which holds Adam's moments in the reconstruction loop).
    /// </summary>
    public static Value Float8(Emitter e, Value xs, bool expand)
    {
        var axes = e.Int64s("_axes", -1L);
        var a = e.Op("Abs", "_abs", xs);
        var m = e.ReduceLast("ReduceMax", "_absmax", a, axes);
        if (!expand)
        {
            var s = e.Op("Div", "_scale", e.Op("Max", "_absmax_floor", m, e.Float("_floor", 1e-12f)), e.Float("_max", Int4Fp8.Fp8Max));
            return e.Op("Mul", "_dq", LowerInt4Fp8Pass.CastPair(e, e.Op("Div", "_div", xs, s), ""), s);
        }
        var tiny = e.Float("_tiny", 1e-30f);
        var mf = e.Op("Max", "_absmax_floor", m, tiny);
        // The smallest non-zero magnitude: zeros replaced by the group's max before the ReduceMin.
        var positive = e.Op("Where", "_nonzero", e.Op("Greater", "_is_nonzero", a, e.Float("_zero", 0f)), a, mf);
        var mn = e.Op("Max", "_min_floor", e.ReduceLast("ReduceMin", "_min", positive, axes), tiny);
        var lnRange = e.Op("Log", "_ln_range", e.Op("Div", "_range", mf, mn));
        var k = e.Op("Clip", "_k_clip", e.Op("Div", "_k_raw", e.Float("_ln_e4m3", (float)Math.Log(ExpandedFp8Vector.NormalRange)),
            e.Op("Max", "_ln_range_floor", lnRange, e.Float("_ln_floor", 1e-6f))), e.Float("_k_min", 1f / 16), e.Float("_k_max", 64f));
        k = e.Op("Where", "_k", e.Op("Greater", "_expands", lnRange, e.Float("_ln_flat", (float)Math.Log(1.0001))), k, e.Float("_one", 1f));
        var fp8Max = e.Float("_fp8_max", Int4Fp8.Fp8Max);
        var u = e.Op("Mul", "_expanded", e.Op("Pow", "_pow", e.Op("Div", "_unit", a, mf), k), fp8Max);
        var c = LowerInt4Fp8Pass.CastPair(e, u, "");
        var back = e.Op("Pow", "_unexpand", e.Op("Div", "_code_unit", c, fp8Max), e.Op("Reciprocal", "_inv_k", k));
        return e.Op("Mul", "_dq", e.Op("Mul", "_magnitude", back, m), e.Op("Sign", "_sign", xs));
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
