using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

/// <summary>FireQ's int4 × float8 arithmetic: the per-tensor t, the float8 group scales and the exact reference GEMM.</summary>
public sealed class Int4Fp8Tests
{
    /// <summary>[n, k] with the given absolute maximum per group of 8 (random values below it, the maximum at the group's start).</summary>
    private static float[] Groups(int n, int k, Func<int, float> maxOfGroup, int seed = 1)
    {
        var rng = new Random(seed);
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i += 8)
        {
            float m = maxOfGroup(i / 8);
            w[i] = (i / 8 % 2 == 0 ? 1 : -1) * m;
            for (int j = 1; j < 8; j++) w[i + j] = (float)(rng.NextDouble() * 2 - 1) * m;
        }
        return w;
    }

    [Fact]
    public void TakesTheFirstTWithTheLeastLowerSlackBeforeAnyGroupPasses448()
    {
        // Group maxima 0.001 (below w_min = 7·2^-9 ≈ 0.0137 until t = 16), 0.5 and 10 (10·64 > 448: the candidates stop at 2^6).
        float[] maxima = [0.001f, 0.5f, 10f, 0.5f];
        var w = Groups(2, 16, i => maxima[i % 4]);
        var q = Int4Fp8.Quantize(w, 2, 16, 8);
        Assert.Equal(4, q.Exponent);
        Assert.Equal(6, q.LimitExponent);
        Assert.Equal(1, q.Underflow);
        Assert.Equal(0, q.UnderflowAtT);
        foreach (float s in q.Weight.Scales)
        {
            Assert.Equal(s, Int4Fp8.RoundFp8(s));                  // a float8 e4m3fn value
            Assert.True(s >= MathF.ScaleB(1f, -9));
        }
        // The dequantized weight over t is close to W: within half a step of each group whose scale is a normal float8 value (a
        // subnormal scale, as 0.001·16/7 rounds to, has one significant bit: the group's largest values clip at 7 steps).
        var d = q.Weight.Dequantize();
        for (int i = 0; i < w.Length; i++)
            if (q.Weight.ScaleAt(i / 16, i % 16) >= MathF.ScaleB(1f, -6))
                Assert.True(Math.Abs(d[i] / q.T - w[i]) <= 0.5f * q.Weight.ScaleAt(i / 16, i % 16) / q.T * 1.0001f + 1e-9f, $"element {i}");
    }

    [Fact]
    public void WithoutTTheSmallGroupsFloorAndLoseTheirValues()
    {
        float[] maxima = [0.001f, 0.002f, 0.5f, 1f];
        var w = Groups(4, 16, i => maxima[i % 4], seed: 2);
        var at1 = Int4Fp8.QuantizeAt(w, 4, 16, 8, 0);
        var best = Int4Fp8.Quantize(w, 4, 16, 8);
        Assert.Equal(4, at1.Underflow);
        Assert.Equal(4, at1.UnderflowAtT);
        Assert.True(best.Exponent >= 3, $"t = 2^{best.Exponent}");
        double Err(Int4Fp8Weight q)
        {
            var d = q.Weight.Dequantize();
            double e = 0;
            for (int i = 0; i < w.Length; i++) if (Math.Abs(w[i]) < 0.003) e += Math.Pow(d[i] / q.T - w[i], 2);
            return e;
        }
        Assert.True(Err(best) < 0.1 * Err(at1), $"small groups' error {Err(best):E2} with t vs {Err(at1):E2} at t = 1");
    }

    [Fact]
    public void ALargeGroupKeepsTAtOne()
    {
        var w = Groups(1, 16, i => i == 0 ? 500f : 1f);
        var q = Int4Fp8.Quantize(w, 1, 16, 8);
        Assert.Equal(0, q.Exponent);
        Assert.Equal(0, q.LimitExponent);
        Assert.Equal(72f, q.Weight.Scales[0]);                   // 500/7 ≈ 71.4 rounds to 72 on the float8 grid (step 8 in [64, 128))
    }

    /// <summary>The reference GEMM equals the exact sum of the float8 products (computed in double, exact here) rounded once to
    /// float32, times s/t — whatever the order.</summary>
    [Fact]
    public void TheReferenceGemmIsTheExactSumRoundedOnce()
    {
        const int M = 5, K = 256, N = 7;
        var rng = new Random(3);
        var w = Enumerable.Range(0, N * K).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.01f).ToArray();
        var x = Enumerable.Range(0, M * K).Select(i => (float)(rng.NextDouble() * 2 - 1) * (i % 31 == 0 ? 50 : 1)).ToArray();
        var q = Int4Fp8.Quantize(w, N, K, 128);
        Assert.True(q.Exponent > 0);
        var y = Int4Fp8.MatMul(x, M, q);
        var b = Int4Fp8.DequantizedFp8(q);
        for (int r = 0; r < M; r++)
        {
            float s = Int4Fp8.TokenScale(x.AsSpan(r * K, K));
            for (int c = 0; c < N; c++)
            {
                double acc = 0;
                for (int j = K - 1; j >= 0; j--) acc += (double)Int4Fp8.RoundFp8(x[r * K + j] / s) * b[c * K + j];
                Assert.Equal((float)acc * (s * MathF.ScaleB(1f, -q.Exponent)), y[r * N + c]);
            }
        }
    }
}
