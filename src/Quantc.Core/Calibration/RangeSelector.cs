namespace Quantc.Core.Calibration;

/// <summary>How an activation range is chosen from calibration statistics.</summary>
public enum RangeMethod
{
    /// <summary>The observed minimum and maximum.</summary>
    MinMax,
    /// <summary>Percentiles of the distribution (clipping the tails).</summary>
    Percentile,
    /// <summary>The threshold minimising the KL divergence between the float and quantized distributions (TensorRT's entropy
    /// calibration).</summary>
    Entropy,
    /// <summary>The threshold minimising the expected squared quantization error (clipping + rounding).</summary>
    Mse,
}

/// <summary>Chooses a quantization range from a tensor's statistics.</summary>
public static class RangeSelector
{
    /// <summary>
    /// A range (lo, hi) for <paramref name="stats"/>. Symmetric methods (entropy, MSE) return
    /// (-t, t); min-max and percentile return the asymmetric range (use max(|lo|,|hi|) for symmetric
    /// quantization). <paramref name="percentile"/> is in percent (e.g. 99.999);
    /// <paramref name="levels"/> is the number of quantization levels on one side (127 for int8).
    /// </summary>
    public static (float Lo, float Hi) Select(TensorStats stats, RangeMethod method, double percentile = 99.999, int levels = 127)
    {
        switch (method)
        {
            case RangeMethod.MinMax:
                return (stats.Min, stats.Max);
            case RangeMethod.Percentile:
            {
                double p = percentile / 100.0;
                float lo = Math.Max(stats.Min, stats.Histogram.Quantile(1 - p));
                float hi = Math.Min(stats.Max, stats.Histogram.Quantile(p));
                return (Math.Min(lo, 0), Math.Max(hi, 0));
            }
            case RangeMethod.Entropy:
            {
                float t = EntropyThreshold(stats.Histogram, levels + 1);
                t = Math.Min(t, stats.AbsMax);
                return (-t, t);
            }
            case RangeMethod.Mse:
            {
                float t = MseThreshold(stats.Histogram, levels);
                t = Math.Min(t, stats.AbsMax);
                return (-t, t);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(method));
        }
    }

    /// <summary>TensorRT-style KL calibration over the |x| histogram with <paramref name="quantBins"/> target bins.</summary>
    public static float EntropyThreshold(Histogram h, int quantBins = 128)
    {
        var hist = h.AbsoluteBins();
        int n = hist.Length;
        double width = (double)h.Range / n;
        if (h.Count == 0 || h.Range == 0) return 0;
        int last = n - 1;
        while (last > 0 && hist[last] == 0) last--;
        if (last + 1 <= quantBins) return (float)((last + 1) * width);

        double bestKl = double.PositiveInfinity;
        int bestI = last + 1;
        var p = new double[n];
        var q = new double[n];
        for (int i = quantBins; i <= last + 1; i++)
        {
            // Reference distribution: the first i bins, with the clipped tail added to the last one.
            for (int j = 0; j < i; j++) p[j] = hist[j];
            for (int j = i; j < n; j++) p[i - 1] += hist[j];
            // Candidate: the first i bins merged into quantBins levels, then spread back over the nonzero bins.
            double binsPerLevel = (double)i / quantBins;
            for (int k = 0; k < quantBins; k++)
            {
                int start = (int)(k * binsPerLevel);
                int end = k == quantBins - 1 ? i : (int)((k + 1) * binsPerLevel);
                double sum = 0;
                int nonzero = 0;
                for (int j = start; j < end; j++) { sum += p[j]; if (p[j] != 0) nonzero++; }
                for (int j = start; j < end; j++) q[j] = p[j] != 0 ? sum / nonzero : 0;
            }
            double kl = Kl(p.AsSpan(0, i), q.AsSpan(0, i));
            if (kl < bestKl) { bestKl = kl; bestI = i; }
        }
        return (float)(bestI * width);
    }

    private static double Kl(ReadOnlySpan<double> p, ReadOnlySpan<double> q)
    {
        double ps = 0, qs = 0;
        foreach (double x in p) ps += x;
        foreach (double x in q) qs += x;
        if (ps == 0 || qs == 0) return double.PositiveInfinity;
        double kl = 0;
        for (int i = 0; i < p.Length; i++)
        {
            if (p[i] == 0) continue;
            double pi = p[i] / ps;
            double qi = q[i] / qs;
            kl += qi == 0 ? pi * 20 /* heavy penalty for mass the candidate cannot represent */ : pi * Math.Log(pi / qi);
        }
        return kl;
    }

    /// <summary>The clipping threshold minimising the expected squared error of symmetric quantization with <paramref name="levels"/>
    /// levels a side.</summary>
    public static float MseThreshold(Histogram h, int levels = 127)
    {
        var hist = h.AbsoluteBins();
        int n = hist.Length;
        if (h.Count == 0 || h.Range == 0) return 0;
        double width = (double)h.Range / n;
        int last = n - 1;
        while (last > 0 && hist[last] == 0) last--;
        double bestErr = double.PositiveInfinity;
        double best = (last + 1) * width;
        int steps = Math.Min(last + 1, 512);
        for (int s = 1; s <= steps; s++)
        {
            double t = (last + 1) * width * s / steps;
            double delta = t / levels;
            double err = 0;
            for (int j = 0; j <= last; j++)
            {
                if (hist[j] == 0) continue;
                double x = (j + 0.5) * width;
                err += x > t ? hist[j] * (x - t) * (x - t) : hist[j] * delta * delta / 12.0;
            }
            if (err < bestErr) { bestErr = err; best = t; }
        }
        return (float)best;
    }
}
