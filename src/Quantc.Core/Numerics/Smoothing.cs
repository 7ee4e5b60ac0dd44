namespace Quantc.Core.Numerics;

/// <summary>
/// The arithmetic of SmoothQuant and OutlierTune: per-input-channel factors that move activation
/// outliers into the weights, and the per-channel shift that centres asymmetric channels. Weights are
/// in MatMul orientation, [K, N]: row j is input channel j.
/// </summary>
public static class Smoothing
{
    /// <summary>max_n |W[j, n]| over every weight that reads the same input (e.g. q, k and v).</summary>
    public static float[] WeightChannelAbsMax(IEnumerable<(float[] W, int K, int N)> weights, int k)
    {
        var m = new float[k];
        foreach (var (w, kk, n) in weights)
        {
            if (kk != k) throw new ArgumentException($"weight has K = {kk}, expected {k}");
            for (int j = 0; j < k; j++)
                m[j] = MathF.Max(m[j], MathF.Abs(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(w.AsSpan(j * n, n))));
        }
        return m;
    }

    /// <summary>
    /// SmoothQuant's factors s_j = max|X_j|^α / max|W_j|^(1−α) (Xiao et al. 2023, eq. 4), with
    /// s_j = 1 for dead channels; clamped to [<paramref name="min"/>, 1/<paramref name="min"/>]. The
    /// activation is divided by s (folded into the preceding norm) and the weight rows multiplied by it.
    /// </summary>
    public static float[] SmoothQuantFactors(ReadOnlySpan<float> actAbsMax, ReadOnlySpan<float> weightAbsMax, double alpha, float min = 1e-5f)
    {
        if (alpha is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(alpha), "α must be in [0, 1]");
        var s = new float[actAbsMax.Length];
        for (int j = 0; j < s.Length; j++)
        {
            double a = actAbsMax[j], w = weightAbsMax[j];
            s[j] = a <= 0 || w <= 0 ? 1f : (float)Math.Clamp(Math.Pow(a, alpha) / Math.Pow(w, 1 - alpha), min, 1 / min);
        }
        return s;
    }

    /// <summary>
    /// Rounds each factor to the nearest power of two (in log scale). Multiplying and dividing by a
    /// power of two is exact in floating point, so a smoothing with such factors changes no output bit
    /// through rounding — the float model stays exactly the same function.
    /// </summary>
    public static void RoundToPowerOfTwo(Span<float> s)
    {
        for (int j = 0; j < s.Length; j++) s[j] = MathF.ScaleB(1f, (int)MathF.Round(MathF.Log2(s[j])));
    }

    /// <summary>OutlierTune's symmetrization shift: the centre of each channel's range, z_j = (max_j + min_j) / 2.</summary>
    public static float[] SymmetrizationShift(ReadOnlySpan<float> channelMin, ReadOnlySpan<float> channelMax)
    {
        var z = new float[channelMin.Length];
        for (int j = 0; j < z.Length; j++) z[j] = 0.5f * (channelMin[j] + channelMax[j]);
        return z;
    }

    /// <summary>W[j, n] *= s_j (rows of a [K, N] weight), in place.</summary>
    public static void ScaleRows(Span<float> w, int k, int n, ReadOnlySpan<float> s)
    {
        for (int j = 0; j < k; j++) System.Numerics.Tensors.TensorPrimitives.Multiply(w.Slice(j * n, n), s[j], w.Slice(j * n, n));
    }

    /// <summary>The bias that compensates a shifted input: b'_n = b_n + Σ_j z_j · W[j, n] (so (x − z)·W + b' = x·W + b).</summary>
    public static float[] CompensateBias(ReadOnlySpan<float> w, int k, int n, ReadOnlySpan<float> z, ReadOnlySpan<float> bias)
    {
        var acc = new double[n];
        for (int j = 0; j < k; j++)
        {
            if (z[j] == 0) continue;
            for (int c = 0; c < n; c++) acc[c] += (double)z[j] * w[j * n + c];
        }
        var b = new float[n];
        for (int c = 0; c < n; c++) b[c] = (float)((bias.IsEmpty ? 0 : bias[c]) + acc[c]);
        return b;
    }
}
