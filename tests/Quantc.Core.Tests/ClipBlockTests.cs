using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;

namespace Quantc.Core.Tests;

/// <summary>The block of the block-wise clipping search: its float output is the <see cref="LlamaBlock"/>'s (with a prefix in the
/// cache, the LlamaBlock's own on [prefix, x]), and the search clips an input whose range an outlier token inflated.</summary>
public class ClipBlockTests
{
    private static readonly LlamaBlockShape Shape = new(32, 4, 2, 8, 48, 1e-5f, 10000);

    private static float[] Random(int n, int seed, float scale = 1) => ReconstructionTests.Random(n, seed, scale);

    private static float[][] Weights() =>
        Shape.LinearSizes.Select((s, i) => Random(s.N * s.K, 10 + i, 1 / MathF.Sqrt(s.K))).ToArray();

    private static ClipBlock Block(float[][] w, float[] norm1, float[] norm2, float[] prefixK, float[] prefixV, int positions)
    {
        var (cos, sin) = BlockOps.RopeTables(positions, Shape.HeadDim, Shape.RopeTheta);
        return new ClipBlock(Shape, norm1, norm2, w, cos, sin, prefixK, prefixV, null, null);
    }

    /// <summary>A prefix of o tokens: the LlamaBlock on [p, x] gives, for the rows of x, what the ClipBlock gives on x with the
    /// LlamaBlock's keys (after RoPE) and values of p in its cache at positions 0…o − 1.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void FloatOutputIsTheLlamaBlocksOnThePrefixedSequence(int o)
    {
        int t = 7, d = Shape.Hidden, wk = Shape.KvHeads * Shape.HeadDim;
        var w = Weights();
        var (n1, n2) = (Random(d, 3, 0.5f).Select(v => 1 + v).ToArray(), Random(d, 4, 0.5f).Select(v => 1 + v).ToArray());
        var all = Random((o + t) * d, 5, 2);
        var reference = new LlamaBlock(Shape, n1, n2);
        var yAll = new float[(o + t) * d];
        var tape = reference.Forward(all, o + t, w, yAll);
        var block = Block(w, n1, n2, tape.K[..(o * wk)], tape.V[..(o * wk)], o + t);
        Assert.Equal(o, block.Prefix);
        var x = all[(o * d)..];
        var y = new float[t * d];
        block.Forward(block.NewState(x, t), new ActivationGrid?[4], y);
        for (int i = 0; i < t * d; i++) Assert.Equal(yAll[o * d + i], y[i], 1e-4f);
    }

    /// <summary>
    /// One token of one sequence carries a 1000× outlier in channel 5, which the first norm's γ = 10 keeps large (other tokens are
    /// near 0 there) and q/k/v barely read (their weights' column 5 is scaled by 0.01): the min-max range of the q/k/v input is set
    /// by that one value, ~16× what every other token needs, so on the int4 grid the other tokens round to almost nothing while
    /// clipping the outlier costs little. The search must pick a ratio below 1 for that input — the one of least block error of a
    /// brute-force evaluation of every ratio — and lower the error.
    /// </summary>
    [Fact]
    public void SearchClipsTheInputWhoseRangeAnOutlierInflated()
    {
        int t = 12, d = Shape.Hidden;
        var w = Weights();
        for (int r = 0; r < 3; r++)
            for (int n = 0; n < Shape.LinearSizes[r].N; n++) w[r][n * d + 5] *= 0.01f;
        var n1 = Enumerable.Repeat(1f, d).ToArray();
        n1[5] = 10;
        var n2 = Enumerable.Repeat(1f, d).ToArray();
        var reference = new LlamaBlock(Shape, n1, n2);
        var seqs = new List<(float[] X, float[] Y)>();
        float lo = 0, hi = 0, typical = 0;
        for (int s = 0; s < 4; s++)
        {
            var x = Random(t * d, 100 + s);
            for (int r = 0; r < t; r++) x[r * d + 5] *= 0.01f;
            if (s == 1) x[6 * d + 5] = 1000;
            var y = new float[t * d];
            reference.Forward(x, t, w, y);
            seqs.Add((x, y));
            var h = new float[t * d];
            BlockOps.RmsNorm(x, n1, h, new float[t], t, d, Shape.Epsilon);
            (lo, hi) = (Math.Min(lo, h.Min()), Math.Max(hi, h.Max()));
            typical = Math.Max(typical, h.Where((_, i) => !(s == 1 && i == 6 * d + 5)).Max(MathF.Abs));
        }
        Assert.True(hi > 8 * typical, $"the outlier should set the range: {lo}…{hi}, others within ±{typical}");
        var block = Block(w, n1, n2, [], [], t);
        double[] grid = [1, 0.5, 0.25, 0.125, 0.0625];
        var bases = new ClipBase?[] { new(NumberFormat.Int4, lo, hi), null, null, null };
        var outcome = ClipBlockSearch.Run(block, seqs, bases, grid, sweeps: 2);
        Assert.True(outcome.FloatError < 1e-8, $"float block vs LlamaBlock {outcome.FloatError}");
        double BruteForce(double ratio)
        {
            double e = 0, energy = 0;
            foreach (var (x, y) in seqs)
            {
                var yq = new float[y.Length];
                var g = ActivationGrid.Of(NumberFormat.Int4, lo * ratio, hi * ratio);
                block.Forward(block.NewState(x, t), [g, null, null, null], yq);
                for (int i = 0; i < y.Length; i++)
                {
                    e += (double)(yq[i] - y[i]) * (yq[i] - y[i]);
                    energy += (double)(y[i] - x[i]) * (y[i] - x[i]);
                }
            }
            return e / energy;
        }
        var errors = grid.ToDictionary(r => r, BruteForce);
        double best = errors.MinBy(kv => kv.Value).Key;
        Assert.True(outcome.Ratios[0] < 1, $"ratio {outcome.Ratios[0]}: errors {string.Join(", ", errors)}");
        Assert.Equal(best, outcome.Ratios[0]);
        Assert.Equal([1.0, 1, 1], outcome.Ratios[1..]);
        Assert.Equal(errors[1], outcome.Start, 1e-9);
        Assert.Equal(errors[best], outcome.Final, 1e-9);
        Assert.True(outcome.Final < 0.5 * outcome.Start, $"{outcome.Start} → {outcome.Final}");
    }
}
