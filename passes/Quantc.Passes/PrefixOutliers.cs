using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// PrefixQuant's outlier-token statistics (Chen et al. 2024): per linear-layer input, per token the largest |x|; a
/// token is an outlier when that exceeds η × the median token maximum of its sample. Collected in one calibration run
/// through <see cref="PassContext.Calibrate"/>'s raw-activation observer, with the token ids of each sample.
/// </summary>
public sealed class PrefixOutliers
{
    /// <summary>One measured tensor (the input of one or more linear layers).</summary>
    public sealed class Site(string tensor, string layer)
    {
        public string Tensor { get; } = tensor;
        public string Layer { get; } = layer;
        internal int Samples;

        /// <summary>Outliers at positions after the first, summed over samples.</summary>
        public long LaterOutliers;

        /// <summary>Largest token-max / median token-max over the samples, and its value, position and token id.</summary>
        public double TopRatio;
        public double TopValue;
        public int TopPosition = -1;
        public long TopToken = -1;

        /// <summary>Outlier token ids (positions after the first) and how often each was one.</summary>
        public Dictionary<long, int> Tokens { get; } = [];

        /// <summary>Outlier positions (all samples) and how often.</summary>
        public SortedDictionary<int, int> Positions { get; } = [];

        public double MeanLaterOutliers => Samples == 0 ? 0 : (double)LaterOutliers / Samples;
    }

    public List<Site> Sites { get; } = [];

    /// <summary>The token at position 0 when every sample starts with the same one (BOS), else null.</summary>
    public long? FirstToken { get; private set; }

    public int SampleCount { get; private set; }

    /// <summary>Measures the inputs of the linear layers whose names match <paramref name="layers"/>.</summary>
    public static PrefixOutliers Measure(PassContext ctx, string pass, double eta, Func<string, bool> layers)
    {
        var data = ctx.CalibrationData ??
            throw new Quantc.Onnx.BadInputException($"pass '{pass}' needs calibration data: give --calib DATA");
        var result = new PrefixOutliers { SampleCount = data.Count };
        var byTensor = new Dictionary<string, Site>(StringComparer.Ordinal);
        foreach (var l in ctx.Map.Linears.Where(l => layers(l.Name)))
            if (!byTensor.ContainsKey(l.Input.Name)) result.Sites.Add(byTensor[l.Input.Name] = new Site(l.Input.Name, l.Name));
        if (result.Sites.Count == 0) return result;
        var ids = data.Select(TokenIds).ToList();
        var firsts = ids.Select(t => t is { Length: > 0 } ? t[0] : (long?)null).Distinct().ToList();
        result.FirstToken = firsts is [long f] ? f : null;
        ctx.Calibrate([.. byTensor.Keys], pass, (name, x, channels) =>
        {
            var site = byTensor[name];
            lock (site)
            {
                int sample = site.Samples++;
                Fold(site, x, channels, eta, sample < ids.Count ? ids[sample] : null);
            }
        });
        return result;
    }

    private static long[]? TokenIds(Quantc.Core.Calibration.CalibrationSample s)
    {
        foreach (var (name, (arr, _)) in s.Inputs)
            if (Quantc.Core.Calibration.CalibrationInputs.IsTokenInput(name))
                return arr switch { long[] l => l, int[] i => [.. i.Select(v => (long)v)], _ => null };
        return null;
    }

    private static void Fold(Site site, ReadOnlySpan<float> x, int channels, double eta, long[]? ids)
    {
        int tokens = x.Length / channels;
        if (tokens == 0) return;
        var max = new double[tokens];
        for (int t = 0; t < tokens; t++)
        {
            double m = 0;
            foreach (float v in x.Slice(t * channels, channels)) m = Math.Max(m, Math.Abs(v));
            max[t] = m;
        }
        var sorted = (double[])max.Clone();
        Array.Sort(sorted);
        double median = Math.Max(sorted[tokens / 2], 1e-30);
        // A batch of several rows is read as one long sequence; token ids line up only for batch 1.
        bool aligned = ids is not null && ids.Length == tokens;
        for (int t = 0; t < tokens; t++)
        {
            double ratio = max[t] / median;
            long id = aligned ? ids![t] : -1;
            if (ratio > site.TopRatio) (site.TopRatio, site.TopValue, site.TopPosition, site.TopToken) = (ratio, max[t], t, id);
            if (ratio <= eta) continue;
            site.Positions[t] = site.Positions.GetValueOrDefault(t) + 1;
            if (t == 0) continue;
            site.LaterOutliers++;
            if (id >= 0) site.Tokens[id] = site.Tokens.GetValueOrDefault(id) + 1;
        }
    }

    /// <summary>o = ⌈max over sites of the mean number of outliers per sample at positions after the first⌉.</summary>
    public int PrefixCount => Sites.Count == 0 ? 0 : (int)Math.Ceiling(Sites.Max(s => s.MeanLaterOutliers) - 1e-9);

    /// <summary>Outlier token ids over every site, most frequent first (ties: smaller id first).</summary>
    public List<(long Token, int Count)> FrequentTokens() =>
        [.. Sites.SelectMany(s => s.Tokens).GroupBy(kv => kv.Key).Select(g => (g.Key, g.Sum(kv => kv.Value)))
            .OrderByDescending(t => t.Item2).ThenBy(t => t.Key)];

    /// <summary>The site with the largest top ratio, or null when none was measured.</summary>
    public Site? Worst => Sites.MaxBy(s => s.TopRatio);

    /// <summary>One line per site: top ratio, value, token and position, outlier positions and tokens.</summary>
    public IEnumerable<string> Describe(string pass, string when, double eta)
    {
        foreach (var s in Sites)
        {
            string positions = s.Positions.Count == 0 ? "none" : string.Join(", ", s.Positions.Take(8).Select(p => $"{p.Key}×{p.Value}")) +
                (s.Positions.Count > 8 ? $", … ({s.Positions.Count} positions)" : "");
            string toks = s.Tokens.Count == 0 ? "" : "; outlier tokens after position 0: " +
                string.Join(", ", s.Tokens.OrderByDescending(kv => kv.Value).Take(6).Select(kv => $"{kv.Key}×{kv.Value}"));
            yield return $"{pass}: {when} {s.Layer} input: top token max {s.TopValue:G4} = {s.TopRatio:0.#}× median " +
                $"(token {s.TopToken} at position {s.TopPosition}); outliers (> {eta:G3}×) at positions {positions}; " +
                $"{s.MeanLaterOutliers:0.##} per sample after position 0{toks}";
        }
    }
}
