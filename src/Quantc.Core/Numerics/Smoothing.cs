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
    public static float[] SmoothQuantFactors(ReadOnlySpan<float> actAbsMax, ReadOnlySpan<float> weightAbsMax, double alpha,
        float min = 1e-5f)
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

    /// <summary>
    /// SmoothQuant's α searched against the output error of the layers that read one input (q/k/v, gate/up, or
    /// down_proj alone), scored on up to <see cref="MaxSearchColumns"/> output columns of each (an even stride; memory
    /// stays the sample, the reference and one column per α): for each α of <paramref name="grid"/>, the factors s(α) (rounded to powers of
    /// two when
    /// <paramref name="powerOfTwo"/>), X' = X / s and W' = diag(s)·W; X' quantized int8 symmetric per tensor
    /// (absmax of the sample), each W' int8 symmetric per output channel; the error is
    /// Σ_readers ‖Q(X')·Q(W') − X·W‖² over the sample rows. Returns the α with the least error (the first on ties)
    /// and every α's error, relative to ‖X·W‖².
    /// </summary>
    /// <param name="x">Sample rows of the input, [rows, k] row-major.</param>
    /// <param name="rows">Number of sample rows.</param>
    /// <param name="k">Input channels.</param>
    /// <param name="grid">The α values to try.</param>
    /// <param name="powerOfTwo">Round the factors to powers of two, as the pass will.</param>
    /// <param name="weights">The readers' weights, each [k, n] (MatMul orientation), unchanged.</param>
    /// <param name="actAbsMax">Per-channel absmax of the input over the whole calibration set (what the factors use).</param>
    public static (double Alpha, double[] RelativeErrors) SearchAlpha(ReadOnlySpan<float> x, int rows, int k,
        IReadOnlyList<(float[] W, int N)> weights,
        ReadOnlySpan<float> actAbsMax, IReadOnlyList<double> grid, bool powerOfTwo)
    {
        if (grid.Count == 0) throw new ArgumentException("the α grid is empty", nameof(grid));
        if (x.Length != rows * k) throw new ArgumentException($"x has {x.Length} values, expected {rows} × {k}");
        var xs = x.ToArray();
        var wAbs = WeightChannelAbsMax(weights.Select(w => (w.W, k, w.N)), k);
        var act = actAbsMax.ToArray();
        // Each reader's scored output columns (all of them up to MaxSearchColumns, else an even stride), stored
        // transposed once ([columns, k], read-only), and the float reference X·W on them. Products run on the packed GEMM
        // (Reconstruction.Gemm: deterministic whatever the thread count), one α after the other.
        var cols = weights.Select(w => SampledColumns(w.W, k, w.N)).ToList();
        var reference = cols.Select(c =>
        {
            var y = new float[(long)rows * c.Count];
            Reconstruction.Gemm.Nt(xs, c.Wt, y, rows, k, c.Count);
            return y;
        }).ToList();
        double energy = reference.Sum(y => (double)System.Numerics.Tensors.TensorPrimitives.Dot(y, y));
        var errors = new double[grid.Count];
        var xq = new float[xs.Length];
        var quantized = cols.Select(c => new float[c.Wt.Length]).ToList();
        var products = reference.Select(y => new float[y.Length]).ToList();
        for (int gi = 0; gi < grid.Count; gi++)
        {
            var s = SmoothQuantFactors(act, wAbs, grid[gi]);
            if (powerOfTwo) RoundToPowerOfTwo(s);
            // Q(X / s), dequantized.
            for (int r = 0; r < rows; r++)
                System.Numerics.Tensors.TensorPrimitives.Divide(xs.AsSpan(r * k, k), s, xq.AsSpan(r * k, k));
            FakeQuantizeSymmetric(xq, System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(xq));
            double err = 0;
            for (int i = 0; i < cols.Count; i++)
            {
                var (wt, count) = cols[i];
                var wq = quantized[i];
                // Q(diag(s)·W), per output channel (per-channel int8), each column in its own row of wq.
                Reconstruction.Gemm.For(count, c =>
                {
                    var col = wq.AsSpan(c * k, k);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(wt.AsSpan(c * k, k), s, col);
                    FakeQuantizeSymmetric(col, System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(col));
                });
                var y = products[i];
                Reconstruction.Gemm.Nt(xq, wq, y, rows, k, count);
                var yRef = reference[i];
                for (int e = 0; e < y.Length; e++)
                {
                    double d = (double)y[e] - yRef[e];
                    err += d * d;
                }
            }
            errors[gi] = energy > 0 ? err / energy : err;
        }
        int best = 0;
        for (int gi = 1; gi < grid.Count; gi++) if (errors[gi] < errors[best]) best = gi;
        return (grid[best], errors);
    }

    /// <summary>v → round_half_even(v / (absmax / 127)) · (absmax / 127), clamped to ±127 steps; in place.</summary>
    private static void FakeQuantizeSymmetric(Span<float> v, float absMax)
    {
        absMax = MathF.Abs(absMax);
        if (absMax <= 0 || !float.IsFinite(absMax)) return;
        float scale = absMax / 127f;
        for (int i = 0; i < v.Length; i++) v[i] = Math.Clamp(MathF.Round(v[i] / scale, MidpointRounding.ToEven), -127f, 127f) * scale;
    }

    /// <summary>At most this many output columns of each reader are scored by <see cref="SearchAlpha"/> (an even stride over N beyond
    /// it).</summary>
    public const int MaxSearchColumns = 1024;

    /// <summary>The scored columns of a [k, n] weight, transposed to [count, k].</summary>
    private static (float[] Wt, int Count) SampledColumns(float[] w, int k, int n)
    {
        int count = Math.Min(n, MaxSearchColumns);
        var t = new float[(long)count * k];
        for (int ci = 0; ci < count; ci++)
        {
            int c = (int)((long)ci * n / count);
            for (int j = 0; j < k; j++) t[(long)ci * k + j] = w[(long)j * n + c];
        }
        return (t, count);
    }
}
