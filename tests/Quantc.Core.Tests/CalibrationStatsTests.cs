using Quantc.Core.Calibration;

namespace Quantc.Core.Tests;

public class CalibrationStatsTests
{
    private static float[] Gaussian(int n, int seed, float scale = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            x[i] = scale * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return x;
    }

    [Fact]
    public void StatisticsEqualADirectComputation()
    {
        const int channels = 8;
        var s = new TensorStats("t");
        var all = new List<float>();
        for (int b = 0; b < 5; b++)
        {
            var x = Gaussian(channels * 30, b, scale: b + 1);
            s.Add(x, channels);
            all.AddRange(x);
        }
        Assert.Equal(all.Min(), s.Min);
        Assert.Equal(all.Max(), s.Max);
        Assert.Equal(150, s.Tokens);
        Assert.Equal(5, s.Samples);
        for (int c = 0; c < channels; c++)
        {
            var col = all.Where((_, i) => i % channels == c).ToList();
            Assert.Equal(col.Min(), s.ChannelMin[c]);
            Assert.Equal(col.Max(), s.ChannelMax[c]);
            Assert.Equal(col.Max(MathF.Abs), s.ChannelAbsMax[c]);
            Assert.Equal(col.Average(), s.ChannelMean[c], 4);
        }
        var tokenAbs = Enumerable.Range(0, 150).Select(t => all.Skip(t * channels).Take(channels).Max(MathF.Abs)).OrderDescending().ToList();
        Assert.Equal(tokenAbs.Take(TensorStats.TopTokens), s.LargestTokens.Select(t => t.AbsMax));
        float median = tokenAbs.Order().ElementAt(75);
        Assert.InRange(s.MedianTokenAbsMax / median, 0.9f, 1.1f); // 1/8-octave bins
        Assert.Equal(all.Count, s.Histogram.Count);
    }

    [Fact]
    public void PercentilesAreExactOnKnownData()
    {
        // Values 0.5, 1.5, ..., 1023.5: one per bin of a 2048-bin histogram over [-1024, 1024].
        var x = Enumerable.Range(0, 1024).Select(i => i + 0.5f).ToArray();
        var h = new Histogram(2048);
        h.Add(x);
        Assert.Equal(1024f, h.Range);
        Assert.Equal(512f, h.Quantile(0.5), 3);
        Assert.Equal(1014f, h.Quantile(1014.0 / 1024), 3);
        Assert.Equal(0f, h.Quantile(0), 3);
        var s = new TensorStats("u");
        s.Add(x, 1);
        var (lo, hi) = RangeSelector.Select(s, RangeMethod.Percentile, percentile: 99.0);
        Assert.Equal(0f, lo);
        Assert.InRange(hi, 1013.7f, 1014f);
        Assert.Equal((0.5f, 1023.5f), RangeSelector.Select(s, RangeMethod.MinMax));
    }

    [Fact]
    public void HistogramGrowthKeepsEveryCount()
    {
        var h = new Histogram(2048);
        h.Add([0.1f, -0.2f, 0.3f]);
        float before = h.Range;
        h.Add([100f, -1000f]);
        Assert.True(h.Range >= 1000f && h.Range > before);
        Assert.Equal(5, h.Count);
        long sum = 0;
        foreach (var b in h.Bins) sum += b;
        Assert.Equal(5, sum);
        Assert.InRange(h.Quantile(0.0), -1000f - (float)h.BinWidth, -1000f + (float)h.BinWidth);
    }

    /// <summary>A sample longer than the histogram's scratch (counted in chunks) gives the same bins as the same values one at a
    /// time: the chunking changes no count.</summary>
    [Fact]
    public void HistogramCountsLongSamplesInChunksExactly()
    {
        var rng = new Random(3);
        var values = Enumerable.Range(0, 3 * 4096 + 1234).Select(_ => (float)(rng.NextDouble() * 8 - 4)).ToArray();
        var whole = new Histogram(2048);
        var single = new Histogram(2048);
        whole.Add([4f]);
        single.Add([4f]);
        whole.Add(values);
        foreach (float v in values) single.Add([v]);
        Assert.Equal(values.Length + 1, whole.Count);
        Assert.Equal(single.Bins.ToArray(), whole.Bins.ToArray());
    }

    [Fact]
    public void EntropyAndMseClipOutliersButKeepTheBulk()
    {
        var x = Gaussian(200_000, 7);
        x[0] = 80f; // one far outlier
        var s = new TensorStats("g");
        s.Add(x, 1);
        var (_, entropy) = RangeSelector.Select(s, RangeMethod.Entropy);
        var (_, mse) = RangeSelector.Select(s, RangeMethod.Mse);
        Assert.InRange(entropy, 2.5f, 20f);
        Assert.InRange(mse, 2.5f, 60f); // one outlier in 200k: clipping it to ~40 balances its error against rounding error
        Assert.Equal(80f, s.AbsMax);
    }

    [Fact]
    public void MemoryDoesNotGrowWithSamples()
    {
        var s = new TensorStats("m");
        var x = Gaussian(4096, 1);
        s.Add(x, 64);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 2000; i++) s.Add(x, 64, i);
        long perBatch = (GC.GetAllocatedBytesForCurrentThread() - before) / 2000;
        Assert.True(perBatch < 1024, $"{perBatch} bytes allocated per batch");
        Assert.Equal(2001 * 64, s.Tokens);
    }

    [Fact]
    public void SpikesAndChannelOutliersAreMeasured()
    {
        var x = Gaussian(64 * 100, 3);
        for (int t = 0; t < 100; t++) x[t * 64 + 5] *= 40; // channel 5 is an outlier channel
        x[17 * 64 + 9] = 3000f;                            // token 17 spikes
        var s = new TensorStats("a");
        s.Add(x, 64);
        Assert.True(s.ChannelOutlierRatio > 20, $"channel ratio {s.ChannelOutlierRatio}");
        Assert.Equal(17, s.LargestTokens[0].Token);
        Assert.True(s.SpikeRatio > 10, $"spike ratio {s.SpikeRatio}");
    }

    [Fact]
    public void StatisticsSaveAndLoad()
    {
        var s = new TensorStats("layer.0/x");
        s.Add(Gaussian(64 * 10, 2), 64);
        var path = Path.Combine(Path.GetTempPath(), $"quantc-stats-{Environment.ProcessId}.json");
        try
        {
            StatsFile.Save(path, [s]);
            var back = Assert.Single(StatsFile.Load(path));
            Assert.Equal(s.Name, back.Name);
            Assert.Equal(s.Min, back.Min);
            Assert.Equal(s.Max, back.Max);
            Assert.Equal(s.ChannelAbsMax.ToArray(), back.ChannelAbsMax.ToArray());
            Assert.Equal(s.ChannelMean, back.ChannelMean);
            Assert.Equal(s.Histogram.Bins.ToArray(), back.Histogram.Bins.ToArray());
            Assert.Equal(s.LargestTokens, back.LargestTokens);
            Assert.Equal(s.MedianTokenAbsMax, back.MedianTokenAbsMax);
            File.WriteAllText(path, "{ not json");
            Assert.Throws<Quantc.Onnx.BadInputException>(() => StatsFile.Load(path));
        }
        finally { File.Delete(path); }
    }
}
