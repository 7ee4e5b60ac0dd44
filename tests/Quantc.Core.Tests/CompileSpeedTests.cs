using Quantc.Core.Diagnostics;
using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

/// <summary>The compile's stage clock, and the fast Hadamard fusion of online_hadamard (bit-identical to the plain loop).</summary>
public class CompileSpeedTests
{
    [Fact]
    public void TheClockRecordsStagesInOrderWithThePeakResidentSet()
    {
        var clock = new StageClock();
        int value = clock.Time("first", () => { Thread.Sleep(5); return 7; });
        clock.Time("second", () => Thread.Sleep(1));
        clock.Add("first", TimeSpan.FromSeconds(2));
        Assert.Equal(7, value);
        Assert.Equal(["first", "second", "first"], clock.Stages.Select(s => s.Stage));
        Assert.True(clock.Stages[0].Elapsed >= TimeSpan.FromMilliseconds(5));
        Assert.Equal(clock.Stages[0].Elapsed + TimeSpan.FromSeconds(2), clock.Of("first"));
        Assert.Equal(TimeSpan.Zero, clock.Of("absent"));
        if (OperatingSystem.IsLinux()) Assert.All(clock.Stages, s => Assert.True(s.PeakRssBytes > 1 << 20, s.ToString()));
        Assert.Equal(TimeSpan.Zero, clock.Stages[2].Cpu);   // timed by the caller: no CPU time

        // A stage that computes has CPU time; one that sleeps next to none.
        double sink = 0;
        clock.Time("busy", () => { var sw = System.Diagnostics.Stopwatch.StartNew(); while (sw.ElapsedMilliseconds < 50) sink += Math.Sqrt(sink + 1); });
        Assert.True(clock.CpuOf("busy") > TimeSpan.FromMilliseconds(5), $"{clock.CpuOf("busy")} ({sink})");
        Assert.Equal(clock.Stages[^1].Cpu, clock.CpuOf("busy"));
    }

    [Fact]
    public void AFailingStageIsTimedAndItsExceptionPasses()
    {
        var clock = new StageClock();
        Assert.Throws<InvalidOperationException>(() => clock.Time("broken", () => throw new InvalidOperationException("no")));
        Assert.Equal("broken", Assert.Single(clock.Stages).Stage);
    }

    /// <summary>online_hadamard's weight fusion as it was written before (one column at a time, scalar): the reference.</summary>
    private static void PlainFusion(float[] w, int k, int n)
    {
        var h = Hadamard.Matrix(k);
        var col = new double[k];
        for (int c = 0; c < n; c++)
        {
            for (int i = 0; i < k; i++)
            {
                double acc = 0;
                for (int j = 0; j < k; j++) acc += h[(long)i * k + j] * (double)w[j * n + c];
                col[i] = acc / k;
            }
            for (int i = 0; i < k; i++) w[i * n + c] = (float)col[i];
        }
    }

    [Theory]
    [InlineData(64, 1)]
    [InlineData(64, 16)]
    [InlineData(12, 37)]
    [InlineData(156, 20)]
    [InlineData(256, 50)]
    [InlineData(5632, 3)]     // the 1b model's down_proj: 2^7 · 44
    public void TheFastFusionIsTheExplicitProductToWithinOneUlp(int k, int n)
    {
        // The fast transform sums in another order than H·W with the explicit matrix: both in double, rounded to float once, so
        // an element may differ by one float ulp where the exact value lies next to a rounding boundary, and rarely.
        var rng = new Random(k * 1000 + n);
        var w = new float[k * n];
        for (int i = 0; i < w.Length; i++)
            w[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-6, 4)));   // spread magnitudes: roundings differ if order did
        w[0] = -0f;
        var expected = (float[])w.Clone();
        PlainFusion(expected, k, n);
        var again = (float[])w.Clone();
        Hadamard.FuseIntoColumns(w, k, n);
        int differing = 0;
        for (int i = 0; i < w.Length; i++)
        {
            if (expected[i] == w[i]) continue;
            differing++;
            Assert.True(Math.Abs(BitConverter.SingleToInt32Bits(expected[i]) - BitConverter.SingleToInt32Bits(w[i])) == 1,
                $"element {i}: {expected[i]} vs {w[i]}");
        }
        Assert.True(differing <= Math.Max(1, w.Length / 1000), $"{differing} of {w.Length} elements differ by one ulp");
        Hadamard.FuseIntoColumns(again, k, n);
        Assert.Equal(w, again);     // deterministic
    }

    [Theory]
    [InlineData(32)]
    [InlineData(0)]
    public void RoundingALargeWeightOnThePoolGivesTheBytesOfRoundingItRowByRow(int group)
    {
        int n = 300, k = 1024;   // above WeightQuantizer.ParallelElements, and not a whole number of row blocks
        Assert.True((long)n * k >= WeightQuantizer.ParallelElements);
        var rng = new Random(group);
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 2)));
        var all = WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, group);
        int groups = group == 0 ? 1 : k / group;
        for (int r = 0; r < n; r++)
        {
            var row = WeightQuantizer.Rtn(w.AsSpan(r * k, k), 1, k, QuantFormat.Int4, group);
            Assert.Equal(row.Values, all.Values.AsSpan(r * k, k).ToArray());
            Assert.Equal(row.Scales, all.Scales.AsSpan(r * groups, groups).ToArray());
        }
    }

    [Fact]
    public void TheFusionRefusesAWeightOfTheWrongSize() =>
        Assert.Throws<ArgumentException>(() => Hadamard.FuseIntoColumns(new float[10], 4, 4));
}
