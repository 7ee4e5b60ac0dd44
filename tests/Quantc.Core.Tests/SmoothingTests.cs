using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

public class SmoothingTests
{
    [Fact]
    public void SmoothQuantFactorsFollowTheFormula()
    {
        var s = Smoothing.SmoothQuantFactors([16f, 1f, 0f], [4f, 1f, 2f], alpha: 0.5);
        Assert.Equal(2f, s[0], 5); // sqrt(16) / sqrt(4)
        Assert.Equal(1f, s[1], 5);
        Assert.Equal(1f, s[2]); // dead channel
        Assert.Throws<ArgumentOutOfRangeException>(() => Smoothing.SmoothQuantFactors([1f], [1f], 1.5));
    }

    [Fact]
    public void SmoothingIsFunctionPreservingAndFlattensOutlierChannels()
    {
        var rng = new Random(1);
        const int k = 8, n = 5, tokens = 32;
        var x = new float[tokens * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() - 0.5) * (i % k == 3 ? 60 : 1);
        var w = Enumerable.Range(0, k * n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var act = new float[k];
        for (int t = 0; t < tokens; t++) for (int j = 0; j < k; j++) act[j] = MathF.Max(act[j], MathF.Abs(x[t * k + j]));
        var s = Smoothing.SmoothQuantFactors(act, Smoothing.WeightChannelAbsMax([(w, k, n)], k), 0.5);
        var w2 = (float[])w.Clone();
        Smoothing.ScaleRows(w2, k, n, s);
        var x2 = x.Select((v, i) => v / s[i % k]).ToArray();
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < n; c++)
            {
                double y = 0, y2 = 0;
                for (int j = 0; j < k; j++) { y += x[t * k + j] * w[j * n + c]; y2 += x2[t * k + j] * w2[j * n + c]; }
                Assert.Equal(y, y2, 4);
            }
        var act2 = new float[k];
        for (int t = 0; t < tokens; t++) for (int j = 0; j < k; j++) act2[j] = MathF.Max(act2[j], MathF.Abs(x2[t * k + j]));
        Assert.True(act2.Max() / act2.Min() < act.Max() / act.Min() / 3, "smoothing should shrink the channel spread");
    }

    [Fact]
    public void ShiftAndBiasCompensationPreserveTheOutput()
    {
        float[] w = [1, 2, 3, 4, 5, 6]; // K = 2, N = 3
        float[] bias = [0.5f, -0.5f, 1f];
        var z = Smoothing.SymmetrizationShift([8f, -3f], [12f, 1f]);
        Assert.Equal(new[] { 10f, -1f }, z);
        var b2 = Smoothing.CompensateBias(w, 2, 3, z, bias);
        float[] x = [9f, 0.5f];
        for (int c = 0; c < 3; c++)
        {
            float y = x[0] * w[c] + x[1] * w[3 + c] + bias[c];
            float y2 = (x[0] - z[0]) * w[c] + (x[1] - z[1]) * w[3 + c] + b2[c];
            Assert.Equal(y, y2, 4);
        }
    }

    /// <summary>
    /// alpha: auto's search: each α's error is the W8A8 output error of the smoothed layer (checked here against a
    /// plain recomputation for two α), the winner has the least error, and with outlier channels in X it is far
    /// better than not smoothing at all.
    /// </summary>
    [Fact]
    public void AlphaSearchScoresEachAlphaByTheQuantizedOutputError()
    {
        var rng = new Random(4);
        const int k = 32, rows = 64;
        int[] ns = [12, 20];
        var x = new float[rows * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % k is 5 or 17 ? 80 : 1);
        var ws = ns.Select(n => Enumerable.Range(0, k * n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToList();
        var act = new float[k];
        for (int r = 0; r < rows; r++) for (int j = 0; j < k; j++) act[j] = MathF.Max(act[j], MathF.Abs(x[r * k + j]));
        double[] grid = [0.1, 0.3, 0.5, 0.7, 0.9];
        var (best, errors) = Smoothing.SearchAlpha(x, rows, k, ws.Select((w, i) => (w, ns[i])).ToList(), act, grid, powerOfTwo: false);

        // The same error, recomputed plainly: per-tensor int8 X / s, per-column int8 diag(s)·W.
        double Error(double alpha)
        {
            var wAbs = Smoothing.WeightChannelAbsMax(ws.Select((w, i) => (w, k, ns[i])), k);
            var s = alpha < 0 ? Enumerable.Repeat(1f, k).ToArray() : Smoothing.SmoothQuantFactors(act, wAbs, alpha);
            var xs = x.Select((v, i) => v / s[i % k]).ToArray();
            float xScale = xs.Max(MathF.Abs) / 127f;
            var xq = xs.Select(v => Math.Clamp(MathF.Round(v / xScale, MidpointRounding.ToEven), -127, 127) * xScale).ToArray();
            double err = 0, energy = 0;
            for (int i = 0; i < ws.Count; i++)
            {
                int n = ns[i];
                var w = ws[i];
                for (int c = 0; c < n; c++)
                {
                    var col = Enumerable.Range(0, k).Select(j => w[j * n + c] * s[j]).ToArray();
                    float wScale = col.Max(MathF.Abs) / 127f;
                    var cq = col.Select(v => Math.Clamp(MathF.Round(v / wScale, MidpointRounding.ToEven), -127, 127) * wScale).ToArray();
                    for (int r = 0; r < rows; r++)
                    {
                        double y = 0, yq = 0;
                        for (int j = 0; j < k; j++) { y += x[r * k + j] * w[j * n + c]; yq += xq[r * k + j] * cq[j]; }
                        err += (yq - y) * (yq - y);
                        energy += y * y;
                    }
                }
            }
            return err / energy;
        }
        Assert.Equal(Error(0.3), errors[1], 1e-3 * Error(0.3));
        Assert.Equal(Error(0.7), errors[3], 1e-3 * Error(0.7));
        Assert.Equal(errors.Min(), errors[Array.IndexOf(grid, best)]);
        double unsmoothed = Error(-1);
        Assert.True(errors.Min() * 4 < unsmoothed, $"best α {best}: error {errors.Min():E2} vs {unsmoothed:E2} without smoothing");
        Assert.True(best >= 0.5, $"with 80× outlier channels the search should move most of the difficulty into the weights (chose α = {best})");
    }
}
