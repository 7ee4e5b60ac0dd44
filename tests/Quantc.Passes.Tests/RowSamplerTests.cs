using Quantc.Onnx;

namespace Quantc.Passes.Tests;

/// <summary>The row reservoir of smooth's α search and clip_search: the same rows whether it lives in memory or in a spill file.</summary>
public sealed class RowSamplerTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-rowsampler");

    public void Dispose() => _dir.Delete(recursive: true);

    private static float[] Sample(int rows, int channels, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, rows * channels).Select(_ => (float)r.NextDouble() - 0.5f).ToArray();
    }

    [Theory]
    [InlineData(5)]      // fewer rows seen than the cap: all of them, in order
    [InlineData(300)]    // more: the reservoir replaces rows
    public void SpilledReservoirHoldsTheRowsOfTheInMemoryOne(int rowsPerSample)
    {
        using var spill = new SpillFile(_dir.FullName);
        var asked = new List<long>();
        var memory = new RowSampler(["a", "b"], 64);
        var spilled = new RowSampler(["a", "b"], 64, bytes => { lock (asked) asked.Add(bytes); return spill; });
        for (int s = 0; s < 4; s++)
        {
            var a = Sample(rowsPerSample, 24, s);
            var b = Sample(rowsPerSample * 2, 8, 100 + s);
            // Tensors arrive in parallel (as the calibration hands them over), each in sample order.
            Parallel.Invoke(() => memory.Observe("a", a, 24), () => spilled.Observe("a", a, 24),
                () => memory.Observe("b", b, 8), () => spilled.Observe("b", b, 8));
        }
        Assert.Equal([4L * 64 * 8, 4L * 64 * 24], asked.Order());
        Assert.Equal(4L * 64 * (24 + 8), spill.Length);
        foreach (var (name, k) in new[] { ("a", 24), ("b", 8) })
        {
            var (m, mc) = memory.Rows(name);
            var (f, fc) = spilled.Rows(name);
            Assert.Equal(Math.Min(64, 4 * rowsPerSample * (name == "a" ? 1 : 2)), mc);
            Assert.Equal(mc, fc);
            Assert.Equal(m.AsSpan(0, mc * k).ToArray(), f);
        }
        if (rowsPerSample == 5) Assert.Equal(Sample(5, 24, 0), memory.Rows("a").Rows.AsSpan(0, 5 * 24).ToArray());
    }

    [Fact]
    public void NothingObservedIsNoRows()
    {
        var sampler = new RowSampler(["x"], 16, _ => throw new InvalidOperationException("no buffer is needed"));
        Assert.Equal(0, sampler.Rows("x").Count);
        Assert.Empty(sampler.Rows("x").Rows);
    }
}
