using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

public sealed class AwareRoundingTests
{
    private static (double[] Exact, Rotation Q) Column(int d, int seed)
    {
        var rng = new Random(seed);
        var w = new double[d];
        for (int j = 0; j < d; j++) w[j] = (rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-6, 6));
        var q = Rotation.Create(d, seed);
        q.ApplyRow(w);
        return (w, q);
    }

    private static double[] RowOf(Rotation q, int f)
    {
        var e = new double[q.Size];
        e[f] = 1;
        q.ApplyRow(e);
        return e;
    }

    /// <summary>Back in the original basis: e_f = Σ_j Q[f, j]·(rounded_j − exact_j).</summary>
    private static double ErrorOn(double[] qRow, double[] exact, float[] rounded)
    {
        double e = 0;
        for (int j = 0; j < exact.Length; j++) e += qRow[j] * (rounded[j] - exact[j]);
        return e;
    }

    [Theory]
    [InlineData(128, 1)]
    [InlineData(200, 2)]    // no Hadamard matrix of order 200 here? the test holds for either kind of Q
    [InlineData(1024, 3)]
    public void EmphasisedChannelsGetAFractionOfNearestRoundingsError(int d, int seed)
    {
        var (exact, q) = Column(d, seed);
        int[] channels = [3, d / 2, d - 1];
        var rows = channels.Select(f => RowOf(q, f)).ToList();
        double[] weights = [1e6, 1e6, 1e6];
        var nearest = exact.Select(x => (float)x).ToArray();
        var aware = new float[d];
        AwareRounding.Round(exact, aware, rows, weights);
        for (int j = 0; j < d; j++)
        {
            Assert.True(Math.Abs(aware[j] - exact[j]) <= Math.Abs(MathF.BitIncrement(Math.Abs(nearest[j])) - Math.Abs(nearest[j])) * 1.0000001,
                $"element {j}: {aware[j]} is not a float32 neighbour of {exact[j]}");
            float lo = (float)exact[j] <= exact[j] ? (float)exact[j] : MathF.BitDecrement((float)exact[j]);
            Assert.True(aware[j] == lo || aware[j] == MathF.BitIncrement(lo) || aware[j] == (float)exact[j], $"element {j} left its two neighbours");
        }
        for (int a = 0; a < channels.Length; a++)
        {
            double en = Math.Abs(ErrorOn(rows[a], exact, nearest)), ea = Math.Abs(ErrorOn(rows[a], exact, aware));
            Assert.True(ea < 0.1 * en, $"channel {channels[a]}: aware error {ea:E3}, nearest {en:E3}");
        }
        // The rest pays a little: ‖δ‖ grows, but stays within 2× nearest's.
        double Norm(float[] r) => Math.Sqrt(exact.Select((x, j) => (r[j] - x) * (r[j] - x)).Sum());
        Assert.True(Norm(aware) <= 2 * Norm(nearest), $"‖δ‖ {Norm(aware):E3} vs nearest {Norm(nearest):E3}");
    }

    [Fact]
    public void TheObjectiveNeverExceedsNearestRoundings()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            var (exact, q) = Column(64, seed);
            var rows = new List<double[]> { RowOf(q, seed % 64) };
            double[] weights = [seed * 10.0];
            var nearest = exact.Select(x => (float)x).ToArray();
            double objNearest = exact.Select((x, j) => (nearest[j] - x) * (nearest[j] - x)).Sum() + weights[0] * Math.Pow(ErrorOn(rows[0], exact, nearest), 2);
            var aware = new float[64];
            double obj = AwareRounding.Round(exact, aware, rows, weights);
            double check = exact.Select((x, j) => (aware[j] - x) * (aware[j] - x)).Sum() + weights[0] * Math.Pow(ErrorOn(rows[0], exact, aware), 2);
            Assert.Equal(check, obj, 1e-20);
            Assert.True(obj <= objNearest * (1 + 1e-12), $"seed {seed}: objective {obj:E3} > nearest {objNearest:E3}");
            if (seed == 0) Assert.Equal(nearest, aware);   // weight 0: nothing to gain, nearest kept
        }
    }

    [Fact]
    public void EmphasisedPicksChannelsFarAboveTheMedian()
    {
        var absmax = Enumerable.Repeat(1f, 100).ToArray();
        absmax[7] = 500; absmax[42] = 9; absmax[60] = 7.9f;
        var e = AwareRounding.Emphasised(absmax);
        Assert.Equal([7, 42], e.Select(c => c.Channel));
        Assert.Equal(500, e[0].Scale, 6);
        Assert.Empty(AwareRounding.Emphasised(new float[10]));
        Assert.Single(AwareRounding.Emphasised(absmax, limit: 1));
        Assert.Equal(7, AwareRounding.Emphasised(absmax, limit: 1)[0].Channel);
    }
}
