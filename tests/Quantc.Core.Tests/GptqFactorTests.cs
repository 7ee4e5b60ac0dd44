using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

/// <summary>
/// GPTQ's factor made in place with row-ordered loops (<see cref="GptqFactor"/>, issue 22 item 10) and the vectorized Hessian sums
/// are bit for bit the textbook loops they replace: those loops are kept here, as they were, as the reference.
/// </summary>
public class GptqFactorTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(37)]
    [InlineData(64)]
    [InlineData(300)]       // 38 column tiles of the Cholesky (the last one 4 wide), five column blocks of the inverse
    [InlineData(517)]       // 4 × 8 register tiles with a ragged last row panel (517 = 4·129 + 1) and a 5-wide last tile
    public void TheFactorIsTheTextbookOneBitForBit(int k)
    {
        var (h, _) = Hessian(k, new Random(k), deadEvery: 5);
        var reference = ReferenceFactor(h, k, 0.01, out var referenceDead);
        var own = (double[])h.Clone();
        var factor = GptqFactor.Of(own, k, 0.01);
        Assert.Equal(referenceDead, factor.Dead);
        Assert.True(factor.Dead[0]);
        Assert.Equal(reference.Select(BitConverter.DoubleToInt64Bits), factor.Upper.Select(BitConverter.DoubleToInt64Bits));
    }

    [Theory]
    [InlineData(3, false)]
    [InlineData(33, false)]
    [InlineData(3, true)]
    [InlineData(150, true)]     // 90 tokens: two chunks of 4 × 8 register tiles, ragged rows (150 = 4·37 + 2) and columns
    [InlineData(150, true, true)]   // an infinite input in the second chunk: that chunk goes element by element, zero terms skipped
    public void TheHessianSumsAreTheScalarLoopsBitForBit(int k, bool lower, bool infinite = false)
    {
        var rng = new Random(5);
        var x = new float[90 * k];
        for (int i = 0; i < x.Length; i++) x[i] = i % 9 == 0 ? 0 : (float)(rng.NextDouble() * 6 - 3);
        if (infinite) x[70 * k + 5] = float.PositiveInfinity;
        var h = new double[k * k];
        foreach (int tokens in new[] { 90, 7 })
            if (lower) WeightQuantizer.AccumulateLowerHessian(h, x.AsSpan(0, tokens * k), k);
            else WeightQuantizer.AccumulateHessian(h, x.AsSpan(0, tokens * k), k);
        var reference = new double[k * k];
        ReferenceAccumulate(reference, x, k);
        ReferenceAccumulate(reference, x.AsSpan(0, 7 * k), k);
        // The lower-triangle sums leave the strict upper triangle alone (zero here).
        Assert.Equal(reference.Select((v, e) => lower && e % k > e / k ? 0 : BitConverter.DoubleToInt64Bits(v)),
            h.Select(BitConverter.DoubleToInt64Bits));
        if (lower) Assert.Throws<ArgumentException>(() => WeightQuantizer.AccumulateLowerHessian(new double[5], x, k));
    }

    [Theory]
    [InlineData(21, 256, 32)]       // four tiles of 64 columns
    [InlineData(5, 200, 0)]         // per channel: tiles of 64 and a partial one
    [InlineData(3, 384, 128)]       // tiles of one group
    [InlineData(17, 96, 96)]        // one group, one tile
    public void GptqIsTheTextbookLoopBitForBit(int n, int k, int group)
    {
        var (h, _) = Hessian(k, new Random(n + k), deadEvery: 13);
        var rng = new Random(7);
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var factor = GptqFactor.Of((double[])h.Clone(), k, 0.01);
        var q = WeightQuantizer.Gptq(w, n, k, factor, QuantFormat.Int4, group);
        var (values, scales) = ReferenceGptq(w, n, k, factor, QuantFormat.Int4, group);
        Assert.Equal(values, q.Values);
        Assert.Equal(scales.Select(BitConverter.SingleToInt32Bits), q.Scales.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void GptqFromTheFactorIsGptqFromTheHessianAndLeavesTheHessianAlone()
    {
        const int n = 5, k = 40;
        var (h, _) = Hessian(k, new Random(3), deadEvery: 11);
        var rng = new Random(4);
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var copy = (double[])h.Clone();
        var fromHessian = WeightQuantizer.Gptq(w, n, k, h, QuantFormat.Int4, 8, 0.01);
        Assert.Equal(copy, h);
        var fromFactor = WeightQuantizer.Gptq(w, n, k, GptqFactor.Of(copy, k, 0.01), QuantFormat.Int4, 8);
        Assert.Equal(fromHessian.Values, fromFactor.Values);
        Assert.Equal(fromHessian.Scales, fromFactor.Scales);
        Assert.All(fromFactor.Values.Where((_, i) => i % k == 0), v => Assert.Equal(0, v));      // input 0 is dead: zero weights
        Assert.Throws<ArgumentException>(() => WeightQuantizer.Gptq(w, n, k, GptqFactor.Of(new double[36], 6, 0.01), QuantFormat.Int4));
    }

    [Fact]
    public void ANotPositiveDefiniteHessianIsAClearError()
    {
        var h = new double[] { 1, 2, 2, 1 };
        var e = Assert.Throws<InvalidOperationException>(() => GptqFactor.Of(h, 2, 0));
        Assert.Contains("not positive definite", e.Message);
    }

    /// <summary>A Hessian from correlated random inputs, every <paramref name="deadEvery"/>-th input never active.</summary>
    private static (double[] H, float[] X) Hessian(int k, Random rng, int deadEvery)
    {
        const int tokens = 64;
        var x = new float[tokens * k];
        for (int t = 0; t < tokens; t++)
        {
            double z = rng.NextDouble() * 2 - 1;
            for (int j = 0; j < k; j++) x[t * k + j] = j % deadEvery == 0 ? 0 : (float)(z + rng.NextDouble() - 0.5);
        }
        var h = new double[k * k];
        ReferenceAccumulate(h, x, k);
        return (h, x);
    }

    // The textbook loops as WeightQuantizer had them before the factor was made in place.

    private static void ReferenceAccumulate(double[] h, ReadOnlySpan<float> x, int k)
    {
        int tokens = x.Length / k;
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * k, k);
            for (int i = 0; i < k; i++)
            {
                double xi = 2.0 * row[i];
                if (xi == 0) continue;
                for (int j = 0; j < k; j++) h[i * k + j] += xi * row[j];
            }
        }
    }

    private static (sbyte[] Values, float[] Scales) ReferenceGptq(float[] w, int n, int k, GptqFactor factor, QuantFormat format,
        int groupSize)
    {
        var u = factor.Upper;
        var work = new double[n * k];
        for (int i = 0; i < n * k; i++) work[i] = factor.Dead[i % k] ? 0 : w[i];
        int g = groupSize == 0 ? k : groupSize, groups = k / g;
        var q = new sbyte[n * k];
        var scales = new float[n * groups];
        var colScale = new float[n];
        var slice = new float[g];
        for (int i = 0; i < k; i++)
        {
            if (i % g == 0)
                for (int r = 0; r < n; r++)
                {
                    for (int j = 0; j < g; j++) slice[j] = (float)work[r * k + i + j];
                    colScale[r] = WeightQuantizer.ScaleFor(slice, format);
                    scales[r * groups + i / g] = colScale[r];
                }
            double d = u[i * k + i];
            for (int r = 0; r < n; r++)
            {
                double wi = work[r * k + i];
                int qi = Quantizer.QuantizeInt((float)wi, colScale[r], 0, format);
                q[r * k + i] = (sbyte)qi;
                double err = (wi - qi * (double)colScale[r]) / d;
                for (int j = i + 1; j < k; j++) work[r * k + j] += -err * u[i * k + j];
            }
        }
        return (q, scales);
    }

    private static double[] ReferenceFactor(double[] hessian, int k, double damp, out bool[] dead)
    {
        var h = (double[])hessian.Clone();
        dead = new bool[k];
        double meanDiag = 0;
        for (int i = 0; i < k; i++) meanDiag += h[i * k + i];
        meanDiag /= k;
        for (int i = 0; i < k; i++)
        {
            dead[i] = h[i * k + i] == 0;
            h[i * k + i] = (dead[i] ? 1 : h[i * k + i]) + damp * (meanDiag == 0 ? 1 : meanDiag);
        }
        var l = ReferenceCholesky(h, k);
        var linv = new double[k * k];
        for (int i = 0; i < k; i++)
        {
            linv[i * k + i] = 1 / l[i * k + i];
            for (int j = 0; j < i; j++)
            {
                double s = 0;
                for (int t = j; t < i; t++) s += l[i * k + t] * linv[t * k + j];
                linv[i * k + j] = -s / l[i * k + i];
            }
        }
        var inv = new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++)
            {
                double s = 0;
                for (int t = i; t < k; t++) s += linv[t * k + i] * linv[t * k + j];
                inv[i * k + j] = inv[j * k + i] = s;
            }
        var lc = ReferenceCholesky(inv, k);
        var upper = new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++) upper[j * k + i] = lc[i * k + j];
        return upper;
    }

    private static double[] ReferenceCholesky(double[] a, int k)
    {
        var l = new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++)
            {
                double s = a[i * k + j];
                for (int t = 0; t < j; t++) s -= l[i * k + t] * l[j * k + t];
                if (i == j) l[i * k + i] = Math.Sqrt(s);
                else l[i * k + j] = s / l[j * k + j];
            }
        return l;
    }
}
