using System.Buffers;

namespace Quantc.Core.Numerics;

/// <summary>
/// Activation-aware rounding of a rotated weight column to float32. A reader of a rotated stream computes
/// x'·w' with x' = x·Q, so storing w' rounded (w' + δ) adds x·(Q·δ) to its output: the rounding error seen
/// in the original basis is e = Q·δ. Nearest rounding makes ‖δ‖ = ‖e‖ smallest but spreads e evenly over
/// every original channel, including the few channels whose activations are hundreds of times the median
/// (massive activations), where it is amplified by that factor. This rounding picks, per element, one of
/// the two float32 neighbours of the exact value so that Σ_f s_f²·e_f² is small, with s_f the channel's
/// activation scale relative to the median: the objective is Σ_{f∈M} (s_f² − 1)·e_f² + ‖δ‖² over the
/// emphasised channels M (elsewhere s ≈ 1 and, Q being orthogonal, their share of ‖e‖² is ‖δ‖² minus M's).
/// Greedy coordinate sweeps; every element stays within one float32 ulp of its exact value.
/// </summary>
public static class AwareRounding
{
    /// <summary>
    /// Rounds <paramref name="exact"/> (one column in the rotated basis) into <paramref name="result"/>.
    /// <paramref name="qRows"/>[a] is row M[a] of Q (length d), <paramref name="weights"/>[a] = s² − 1 for that channel (≥ 0).
    /// Returns Σ_a weights[a]·e_a² + ‖δ‖² after rounding (the objective, for logs and tests).
    /// </summary>
    public static double Round(ReadOnlySpan<double> exact, Span<float> result, IReadOnlyList<double[]> qRows, ReadOnlySpan<double> weights,
        int sweeps = 4)
    {
        int d = exact.Length, k = qRows.Count;
        if (result.Length != d) throw new ArgumentException("result length differs from the column length");
        if (weights.Length != k) throw new ArgumentException("one weight per emphasised channel");
        // Called once per weight column (millions on a 7B model): scratch from the shared pools, not three new arrays.
        var delta = ArrayPool<double>.Shared.Rent(d);
        var alt = ArrayPool<double>.Shared.Rent(d);
        var other = ArrayPool<float>.Shared.Rent(d);
        try
        {
            return Round(exact, result, qRows, weights, sweeps, delta, alt, other);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(delta);
            ArrayPool<double>.Shared.Return(alt);
            ArrayPool<float>.Shared.Return(other);
        }
    }

    private static double Round(ReadOnlySpan<double> exact, Span<float> result, IReadOnlyList<double[]> qRows,
        ReadOnlySpan<double> weights, int sweeps,
        double[] delta, double[] alt, float[] other)
    {
        int d = exact.Length, k = qRows.Count;
        for (int j = 0; j < d; j++)
        {
            double w = exact[j];
            float r = (float)w;
            float o = r == w ? r : r > w ? MathF.BitDecrement(r) : MathF.BitIncrement(r);
            if (float.IsInfinity(r) || float.IsInfinity(o)) o = r;
            result[j] = r; other[j] = o;
            delta[j] = r - w; alt[j] = o - w;
        }
        var e = new double[k];
        for (int a = 0; a < k; a++)
        {
            var row = qRows[a];
            double acc = 0;
            for (int j = 0; j < d; j++) acc += row[j] * delta[j];
            e[a] = acc;
        }
        for (int sweep = 0; sweep < sweeps; sweep++)
        {
            bool changed = false;
            for (int j = 0; j < d; j++)
            {
                double step = alt[j] - delta[j];
                if (step == 0) continue;
                double gain = alt[j] * alt[j] - delta[j] * delta[j];
                for (int a = 0; a < k; a++)
                {
                    double qa = qRows[a][j] * step;
                    gain += weights[a] * qa * (2 * e[a] + qa);
                }
                if (gain >= 0) continue;
                for (int a = 0; a < k; a++) e[a] += qRows[a][j] * step;
                (delta[j], alt[j]) = (alt[j], delta[j]);
                (result[j], other[j]) = (other[j], result[j]);
                changed = true;
            }
            if (!changed) break;
        }
        double obj = 0;
        for (int j = 0; j < d; j++) obj += delta[j] * delta[j];
        for (int a = 0; a < k; a++) obj += weights[a] * e[a] * e[a];
        return obj;
    }

    /// <summary>
    /// The channels worth emphasising: those whose activation absmax is at least <paramref name="ratio"/> times the
    /// median channel's, the largest <paramref name="limit"/> of them, each with s = absmax / median.
    /// </summary>
    public static List<(int Channel, double Scale)> Emphasised(ReadOnlySpan<float> channelAbsMax, double ratio = 8, int limit = 16)
    {
        var sorted = channelAbsMax.ToArray();
        Array.Sort(sorted);
        double median = sorted.Length == 0 ? 0 : sorted[sorted.Length / 2];
        var list = new List<(int, double)>();
        if (!(median > 0)) return list;
        for (int f = 0; f < channelAbsMax.Length; f++)
        {
            double s = channelAbsMax[f] / median;
            if (s >= ratio && double.IsFinite(s)) list.Add((f, s));
        }
        return list.OrderByDescending(t => t.Item2).Take(limit).OrderBy(t => t.Item1).ToList();
    }
}
