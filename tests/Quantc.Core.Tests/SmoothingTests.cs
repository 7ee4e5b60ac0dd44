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
}
