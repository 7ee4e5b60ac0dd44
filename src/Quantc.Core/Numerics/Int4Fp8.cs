using Quantc.Ir;

namespace Quantc.Core.Numerics;

/// <summary>
/// A FireQ weight: int4 values (symmetric, per group along K) whose group scales are float8 e4m3fn values, for the
/// weight multiplied by a per-tensor power of two t = 2^<see cref="Exponent"/>: value(n, k) = q(n, k)·s(n, k / group) ≈ t·W(n, k).
/// The layer's output is divided by t again (exact: t is a power of two).
/// </summary>
/// <param name="Weight">The int4 values and the group scales (their float32 values, each an e4m3fn value).</param>
/// <param name="Exponent">log2 t, in [0, <see cref="Int4Fp8.MaxExponent"/>].</param>
/// <param name="Underflow">Groups (not all zero) whose scale max/7 falls below 2^-9 (the least e4m3fn value) at t = 1.</param>
/// <param name="UnderflowAtT">The same at the chosen t.</param>
/// <param name="LimitExponent">The first exponent where some group's t·max passes 448 (the candidates stop before it); -1 when none
/// up to <see cref="Int4Fp8.MaxExponent"/> does.</param>
public sealed record Int4Fp8Weight(QuantizedWeight Weight, int Exponent, int Underflow, int UnderflowAtT, int LimitExponent)
{
    /// <summary>t = 2^<see cref="Exponent"/>.</summary>
    public float T => MathF.ScaleB(1f, Exponent);

    /// <summary>The group scales as float8 e4m3fn bytes, [N, groups].</summary>
    public byte[] ScaleBytes() => Weight.Scales.Select(Float8.ToE4M3Fn).ToArray();
}

/// <summary>
/// FireQ's INT4 × FP8 arithmetic (Baek et al. 2025): the weight quantizer with float8-representable group scales and the
/// per-tensor power-of-two multiplier t, and the reference of the GEMM that <c>ai.quantc.MatMulInt4Fp8</c> computes —
/// activations float8 e4m3fn per token (scale absmax/448), weights dequantized to q·s and rounded to float8 e4m3fn,
/// the products summed exactly (a float8 value is an integer multiple of 2^-9 below 2^18 of them, so every product is an
/// integer multiple of 2^-18 below 2^36 of them, and a sum of up to 2^24 products is exact in 64-bit integers) and rounded once
/// to float32, then times the token's scale and
/// divided by t. The exact sum makes the result independent of the summation order, so that every kernel can match it bit
/// for bit; a kernel accumulating in float32 differs only by that accumulation's rounding.
/// </summary>
public static class Int4Fp8
{
    /// <summary>The largest e4m3fn value.</summary>
    public const float Fp8Max = 448f;

    /// <summary>The smallest positive e4m3fn value (a subnormal), the floor of a group scale.</summary>
    public static readonly float ScaleFloor = MathF.ScaleB(1f, -9);

    /// <summary>w_min = 7·2^-9: the smallest group max whose scale max/7 does not fall below <see cref="ScaleFloor"/>.</summary>
    public static readonly float WMin = 7f * MathF.ScaleB(1f, -9);

    /// <summary>The largest exponent of t tried (t ≤ 2^14).</summary>
    public const int MaxExponent = 14;

    /// <summary>The largest K the exact accumulation is defined for.</summary>
    public const int MaxK = 1 << 24;

    /// <summary>float8 e4m3fn rounding (nearest even, saturating to ±448) of <paramref name="x"/>, as a float32.</summary>
    public static float RoundFp8(float x) => NumericConvert.Float8E4M3FnToFloat(Float8.ToE4M3Fn(x));

    /// <summary>
    /// Quantizes <paramref name="w"/> ([N, K], row n = output channel) as FireQ does: per group of <paramref name="groupSize"/> along
    /// K the absolute maximum m; t = 2^e for e from 0 up, stopping at the first e where some group's t·m passes 448; among those
    /// the e with the least lower slack Σ over groups with t·m &lt; w_min of (w_min − t·m)/w_min (the first on a tie); then per
    /// group s = max(fp8(t·m/7), 2^-9) and q = clip(round(t·w/s), −8, 7) (nearest even).
    /// </summary>
    public static Int4Fp8Weight Quantize(ReadOnlySpan<float> w, int n, int k, int groupSize)
    {
        var max = GroupMax(w, n, k, groupSize);
        int best = 0, limit = -1;
        double bestSlack = double.PositiveInfinity;
        for (int e = 0; e <= MaxExponent; e++)
        {
            float t = MathF.ScaleB(1f, e);
            double slack = 0;
            bool over = false;
            foreach (float m in max)
            {
                float tm = t * m;
                if (tm > Fp8Max) { over = true; break; }
                if (tm < WMin) slack += (WMin - tm) / WMin;
            }
            if (over) { limit = e; break; }
            if (slack < bestSlack) { bestSlack = slack; best = e; }
        }
        return Build(w, n, k, groupSize, max, best, limit);
    }

    /// <summary>The same quantization at a given t = 2^<paramref name="exponent"/> (0: FireQ without its per-tensor scaling).</summary>
    public static Int4Fp8Weight QuantizeAt(ReadOnlySpan<float> w, int n, int k, int groupSize, int exponent)
    {
        var max = GroupMax(w, n, k, groupSize);
        int limit = -1;
        for (int e = 0; e <= MaxExponent && limit < 0; e++)
            if (max.Any(m => MathF.ScaleB(m, e) > Fp8Max)) limit = e;
        return Build(w, n, k, groupSize, max, exponent, limit);
    }

    private static float[] GroupMax(ReadOnlySpan<float> w, int n, int k, int groupSize)
    {
        if (groupSize <= 0 || k % groupSize != 0) throw new ArgumentException($"K = {k} is not a multiple of group size {groupSize}");
        if (w.Length != n * k) throw new ArgumentException("values do not fill [N, K]");
        int groups = k / groupSize;
        var max = new float[n * groups];
        for (int r = 0; r < n; r++)
            for (int gi = 0; gi < groups; gi++)
            {
                float m = 0;
                foreach (float v in w.Slice(r * k + gi * groupSize, groupSize)) m = Math.Max(m, MathF.Abs(v));
                max[r * groups + gi] = m;
            }
        return max;
    }

    private static Int4Fp8Weight Build(ReadOnlySpan<float> w, int n, int k, int groupSize, float[] max, int exponent, int limit)
    {
        int groups = k / groupSize;
        float t = MathF.ScaleB(1f, exponent);
        var scales = new float[n * groups];
        var q = new sbyte[n * k];
        for (int r = 0; r < n; r++)
            for (int gi = 0; gi < groups; gi++)
            {
                float s = Math.Max(RoundFp8(t * max[r * groups + gi] / 7f), ScaleFloor);
                scales[r * groups + gi] = s;
                for (int j = gi * groupSize; j < (gi + 1) * groupSize; j++)
                    q[r * k + j] = (sbyte)Math.Clamp(MathF.Round(t * w[r * k + j] / s, MidpointRounding.ToEven), -8f, 7f);
            }
        // All-zero groups are exact at any scale: they are not counted as underflowing.
        int under = max.Count(m => m > 0 && m < WMin), underT = max.Count(m => m > 0 && t * m < WMin);
        return new Int4Fp8Weight(new QuantizedWeight(QuantFormat.Int4, n, k, groupSize, q, scales), exponent, under, underT, limit);
    }

    /// <summary>The per-token activation scale: max(absmax of the row, 1e-12)/448.</summary>
    public static float TokenScale(ReadOnlySpan<float> row)
    {
        float m = 0;
        foreach (float v in row) m = Math.Max(m, MathF.Abs(v));
        return Math.Max(m, 1e-12f) / Fp8Max;
    }

    /// <summary>The float8 weight the GEMM multiplies: fp8(q·s) for every (n, k), [N, K].</summary>
    public static float[] DequantizedFp8(Int4Fp8Weight w)
    {
        var q = w.Weight;
        var d = new float[q.N * q.K];
        var qv = q.Values;
        var scales = q.Scales;
        int groups = q.Groups;
        for (int r = 0; r < q.N; r++)
            for (int j = 0; j < q.K; j++)
                d[r * q.K + j] = RoundFp8(qv[r * q.K + j] * scales[r * groups + (q.GroupSize == 0 ? 0 : j / q.GroupSize)]);
        return d;
    }

    /// <summary>
    /// The reference of <c>ai.quantc.MatMulInt4Fp8</c>: y[m, n] = fp32(Σ_k a[m, k]·b[n, k])·(s_m·2^-e) with s_m the token scale of row
    /// m of <paramref name="x"/> ([M, K]), a = fp8(x/s_m), b = fp8(q·s) and the sum exact (see the class remarks).
    /// </summary>
    public static float[] MatMul(ReadOnlySpan<float> x, int m, Int4Fp8Weight w)
    {
        var q = w.Weight;
        int k = q.K, n = q.N;
        if (k > MaxK) throw new ArgumentException($"K = {k} is above {MaxK}, where the exact sum is defined");
        if (x.Length != m * k) throw new ArgumentException("activations do not fill [M, K]");
        var b = DequantizedFp8(w).Select(Units).ToArray();
        var y = new float[m * n];
        var a = new long[k];
        float invT = MathF.ScaleB(1f, -w.Exponent);
        for (int r = 0; r < m; r++)
        {
            var row = x.Slice(r * k, k);
            float s = TokenScale(row);
            for (int j = 0; j < k; j++) a[j] = Units(RoundFp8(row[j] / s));
            for (int c = 0; c < n; c++)
            {
                long acc = 0;
                for (int j = 0; j < k; j++) acc += a[j] * b[c * k + j];
                y[r * n + c] = (float)MathF.ScaleB((float)acc, -18) * (s * invT);
            }
        }
        return y;
    }

    /// <summary>A float8 e4m3fn value as an integer count of 2^-9 (exact: every e4m3fn value is one).</summary>
    public static long Units(float fp8) => (long)MathF.ScaleB(fp8, 9);
}
