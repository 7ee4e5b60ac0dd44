using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;

namespace Quantc.Core.Tests;

/// <summary>The reconstruction engine of FlexRound / LRQ: matrix products, COAT's FP8 storage, Adam, the straight-through
/// gradients (against finite differences) and the training loop.</summary>
public class ReconstructionTests
{
    internal static float[] Random(int n, int seed, float scale = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return x;
    }

    [Theory]
    [InlineData(13, 37, 29)]
    [InlineData(50, 300, 70)]
    [InlineData(6, 1, 16)]
    [InlineData(1, 5, 3)]
    [InlineData(200, 70, 33)]
    [InlineData(512, 512, 512)]
    public void ProductsMatchTheNaiveSum(int m, int k, int n)
    {
        var a = Random(m * k, 1);
        var b = Random(k * n, 2);
        var c = new float[m * n];
        Gemm.Nn(a, b, c, m, k, n);
        var bt = new float[n * k];
        Gemm.Transpose(b, bt, k, n);
        var c2 = new float[m * n];
        Gemm.Nt(a, bt, c2, m, k, n);
        var at = new float[k * m];
        Gemm.Transpose(a, at, m, k);
        var c3 = Enumerable.Repeat(1f, m * n).ToArray();
        Gemm.Tn(at, b, c3, m, k, n, accumulate: true);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
                Assert.Equal(s, c[i * n + j], 1e-4 * Math.Sqrt(k));
                Assert.Equal(s, c2[i * n + j], 1e-4 * Math.Sqrt(k));
                Assert.Equal(s + 1, c3[i * n + j], 1e-4 * Math.Sqrt(k));
            }
    }

    [Fact]
    public void FastE4M3EncoderIsBitIdenticalToTheReference()
    {
        var rng = new Random(3);
        var values = new List<float> { 0f, -0f, 448f, 449f, 463.9f, 464f, 480f, 1e6f, 1f / 64, 1f / 512, 1f / 1024, 3f / 1024, 5f / 1024,
            1e-9f, 15f / 1024, 17f / 1024, 1.0625f, 1.1875f, 240f, 248f, 232f };
        for (int i = 0; i < 20000; i++)
        {
            double mag = Math.Pow(2, rng.NextDouble() * 24 - 14);
            values.Add((float)(rng.Next(2) == 0 ? mag : -mag));
        }
        foreach (float v in values)
        {
            Assert.Equal(Float8.ToE4M3Fn(v), E4M3.Encode(v));
            Assert.Equal(Float8.ToE4M3Fn(-v), E4M3.Encode(-v));
        }
    }

    [Fact]
    public void TheVectorE4M3CodecIsBitIdenticalToTheScalarOne()
    {
        if (!E4M3.Vectorized) return;   // no AVX2: the scalar loops are the only path
        var rng = new Random(11);
        var values = new List<float> { 0f, -0f, 448f, 449f, 463.9f, 464f, 480f, 1e6f, float.PositiveInfinity, float.NegativeInfinity,
            float.NaN, 1f / 64, 1f / 64 * 0.99999f, 1f / 512, 1f / 1024, 3f / 1024, 5f / 1024, 1e-9f, 15f / 1024, 17f / 1024, 1.0625f,
            1.1875f, 240f, 248f, 232f, float.Epsilon, 447.99f, 1f / 128 + 1f / 1024 };
        for (int i = 0; i < 40000; i++)
        {
            double mag = Math.Pow(2, rng.NextDouble() * 30 - 18);
            values.Add((float)(rng.Next(2) == 0 ? mag : -mag));
        }
        while (values.Count % 8 != 0) values.Add(1f);
        var x = values.ToArray();
        for (int i = 0; i < x.Length; i += 8)
        {
            var codes = E4M3.Encode(System.Runtime.Intrinsics.Vector256.Create(x, i));
            for (int l = 0; l < 8; l++) Assert.Equal(E4M3.Encode(x[i + l]), (byte)codes[l]);
        }
        // Every code decodes to the table's value (NaN to NaN).
        var all = Enumerable.Range(0, 256).Select(c => (byte)c).ToArray();
        var decoded = new float[256];
        E4M3.Decode(all, decoded, 1f);
        for (int c = 0; c < 256; c++)
        {
            if (float.IsNaN(E4M3.Decode((byte)c))) Assert.True(float.IsNaN(decoded[c]), $"code {c}");
            else Assert.Equal(BitConverter.SingleToUInt32Bits(E4M3.Decode((byte)c)), BitConverter.SingleToUInt32Bits(decoded[c]));
        }
        // The span forms at lengths with scalar tails, against the scalar element codec.
        foreach (int n in new[] { 7, 32, 45, 101 })
        {
            var src = x.AsSpan(3, n);
            var enc = new byte[n];
            E4M3.Encode(src, enc, 0.37f);
            for (int i = 0; i < n; i++) Assert.Equal(E4M3.Encode(src[i] * 0.37f), enc[i]);
            var dec = new float[n];
            E4M3.Decode(enc, dec, 1.7f);
            for (int i = 0; i < n; i++) Assert.Equal(E4M3.Decode(enc[i]) * 1.7f, dec[i]);
        }
    }

    [Theory]
    [InlineData(true, 128)]
    [InlineData(false, 128)]
    [InlineData(true, 50)]
    public void TheExpandedMomentCodecGivesTheScalarBitsWithAvx2(bool expand, int group)
    {
        if (!E4M3.Vectorized) return;
        var rng = new Random(group);
        int n = 20 * group + (group == 50 ? 5 : 37);   // a last group shorter than one vector, or not a whole number of them
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            int g = i / group;
            // Narrow groups, wide ones (10⁻¹²… 1), zeros and signs, an all-zero group, a constant one.
            double mag = g % 3 == 0 ? 0.5 + rng.NextDouble() : Math.Pow(10, -12 * rng.NextDouble());
            x[i] = g == 4 ? 0f : g == 5 ? 0.25f : (float)(rng.Next(5) == 0 ? 0 : rng.Next(2) == 0 ? mag : -mag) * (g + 1);
        }
        var scalar = new ExpandedFp8Vector(n, group, expand);
        var vector = new ExpandedFp8Vector(n, group, expand);
        var a = new float[group];
        var b = new float[group];
        for (int g = 0; g < scalar.Groups; g++)
        {
            int len = Math.Min(group, n - g * group);
            scalar.WriteGroup(g, x.AsSpan(g * group, len), vector: false);
            vector.WriteGroup(g, x.AsSpan(g * group, len), vector: true);
            // Each reader on each writer's codes: all four the same bits.
            scalar.ReadGroup(g, a.AsSpan(0, len), vector: false);
            vector.ReadGroup(g, b.AsSpan(0, len), vector: true);
            for (int i = 0; i < len; i++) Assert.Equal(BitConverter.SingleToUInt32Bits(a[i]), BitConverter.SingleToUInt32Bits(b[i]));
            vector.ReadGroup(g, b.AsSpan(0, len), vector: false);
            for (int i = 0; i < len; i++) Assert.Equal(BitConverter.SingleToUInt32Bits(a[i]), BitConverter.SingleToUInt32Bits(b[i]));
        }
    }

    [Fact]
    public void StoredMatricesRoundTripWithinTheGrid()
    {
        int rows = 7, cols = 40;
        var x = Random(rows * cols, 4, 5);
        x[17] = 300;                                                            // one outlier
        var f = StoredMatrix.Float32(x, cols);
        var t = StoredMatrix.PerTensor(x, cols);
        var g = StoredMatrix.PerGroup(x, cols, 16);
        Assert.Equal(4L * x.Length, f.Bytes);
        Assert.Equal(x.Length + 4L, t.Bytes);
        Assert.Equal(x.Length + 4L * rows * 3, g.Bytes);
        var back = new float[x.Length];
        f.Read(0, rows, back);
        Assert.Equal(x, back);
        var bt = new float[x.Length];
        t.Read(0, rows, bt);
        var bg = new float[(rows - 2) * cols];
        g.Read(2, rows - 2, bg);
        double errT = 0, errG = 0;
        for (int i = 0; i < x.Length; i++)
        {
            // e4m3: 3 mantissa bits, relative error ≤ 2⁻⁴ for normal values; subnormals have an absolute step of 2⁻⁹ · scale.
            Assert.True(Math.Abs(bt[i] - x[i]) <= Math.Abs(x[i]) / 16 + 300f / 448 / 1024 + 1e-7);
            errT += Math.Abs(bt[i] - x[i]);
            if (i >= 2 * cols)
            {
                Assert.True(Math.Abs(bg[i - 2 * cols] - x[i]) <= Math.Abs(x[i]) / 16 + 1e-6);
                errG += Math.Abs(bg[i - 2 * cols] - x[i]);
            }
        }
        Assert.True(errG < errT, $"per-group error {errG} should be below per-tensor {errT} with an outlier");
    }

    [Fact]
    public void DynamicRangeExpansionKeepsSmallAndNarrowGroupsPrecise()
    {
        // A narrow group (all magnitudes in [0.5, 1]) and a wide one (1e-6 .. 1): the expansion gains precision on the first
        // and keeps the tiny values of the second from flushing to zero.
        int n = 256;
        var rng = new Random(5);
        var x = new float[n];
        for (int i = 0; i < 128; i++) x[i] = (float)((0.5 + rng.NextDouble() * 0.5) * (i % 2 == 0 ? 1 : -1));
        for (int i = 128; i < n; i++) x[i] = (float)Math.Pow(10, -6 * rng.NextDouble());
        x[130] = 0;
        double Err(bool expand, int from, int to)
        {
            var v = new ExpandedFp8Vector(n, 128, expand);
            v.Write(x);
            var back = new float[n];
            v.Read(back);
            Assert.Equal(0f, back[130]);
            double e = 0;
            for (int i = from; i < to; i++) if (x[i] != 0) e += Math.Abs(back[i] - x[i]) / Math.Abs(x[i]);
            return e / (to - from);
        }
        double narrowPlain = Err(false, 0, 128), narrowExpanded = Err(true, 0, 128);
        double widePlain = Err(false, 128, n), wideExpanded = Err(true, 128, n);
        Assert.True(narrowExpanded < narrowPlain / 4, $"narrow: {narrowExpanded} vs {narrowPlain}");
        Assert.True(wideExpanded < widePlain / 2 && widePlain > 0.05, $"wide: {wideExpanded} vs {widePlain}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AdamMinimisesAQuadratic(bool fp8)
    {
        var target = Random(300, 6, 3);
        var theta = new float[300];
        var adam = new Adam(300, 0.1, 400, fp8);
        var grad = new float[300];
        for (int t = 0; t < 400; t++)
        {
            for (int i = 0; i < 300; i++) grad[i] = 2 * (theta[i] - target[i]);
            adam.Step(theta, grad);
        }
        for (int i = 0; i < 300; i++) Assert.Equal(target[i], theta[i], 0.05);
        Assert.Equal(fp8 ? 2 * (300 + 8 * 3) : 8 * 300, adam.StateBytes);
    }

    [Theory]
    [InlineData(false, 300, 77)]
    [InlineData(true, 300, 77)]
    [InlineData(false, 70_000, 65_601)]
    [InlineData(true, 70_000, 65_601)]
    public void AdamWithASplitGradientStepsAsWithTheJoinedOne(bool fp8, int length, int headLength)
    {
        // The split falls inside an FP8 group of 128 and (for the long vectors, updated in 64 chunks) inside a chunk.
        var a = new Adam(length, 0.05, 10, fp8);
        var b = new Adam(length, 0.05, 10, fp8);
        var ta = Random(length, 20);
        var tb = ta.ToArray();
        for (int step = 0; step < 4; step++)
        {
            var grad = Random(length, 30 + step, 1 + step);
            var head = grad[..headLength];
            // The tail array is longer than the rest of the gradient (a linear's ∂P in a shared buffer): the extra values are ignored.
            var tail = grad[headLength..].Concat(Random(50, 40)).ToArray();
            a.Step(ta, grad);
            b.Step(tb, head, tail);
            Assert.Equal(ta, tb);
        }
        Assert.Throws<ArgumentException>(() => b.Step(tb, new float[headLength], new float[length - headLength - 1]));
    }

    private static (float[] W, QuantizedWeight Rtn) Layer(int n, int k, QuantFormat f, int group, bool symmetric, int seed)
    {
        var w = Random(n * k, seed, 0.2f);
        return (w, symmetric ? WeightQuantizer.Rtn(w, n, k, f, group) : WeightQuantizer.RtnAsymmetric(w, n, k, f, group));
    }

    public static TheoryData<RoundingMethod, string, int, bool> Formats() => new()
    {
        { RoundingMethod.FlexRound, "int4", 8, true },
        { RoundingMethod.Lrq, "int4", 8, false },
        { RoundingMethod.FlexRound, "int8", 0, true },
        { RoundingMethod.Lrq, "int8", 0, false },
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void StepZeroIsRoundToNearestBitForBit(RoundingMethod method, string format, int group, bool symmetric)
    {
        var (w, rtn) = Layer(12, 32, QuantFormat.Parse(format), group, symmetric, 7);
        var x = StoredMatrix.Float32(Random(20 * 32, 8), 32);
        var outcome = RoundingTrainer.Train(w, rtn, [x], null, new RoundingSettings { Method = method, Iterations = 0 });
        Assert.Same(rtn, outcome.Weight);
        var layer = new RoundingLayer(w, rtn, method, 4, 1);
        layer.Forward();
        var r = layer.Result(rtn);
        Assert.Equal(rtn.Values, r.Values);
        Assert.Equal(rtn.Scales, r.Scales);
        Assert.Equal(rtn.ZeroPoints, r.ZeroPoints);
        Assert.Equal(rtn.Dequantize(), layer.Weights);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void BackwardInPlaceGivesBackwardsGradientBitForBit(RoundingMethod method, string format, int group, bool symmetric)
    {
        int n = 12, k = 32;
        var (w, rtn) = Layer(n, k, QuantFormat.Parse(format), group, symmetric, 13);
        var layer = new RoundingLayer(w, rtn, method, 4, 1);
        var rng = new Random(14);
        for (int i = 0; i < layer.Theta.Length; i++) layer.Theta[i] += (float)((rng.NextDouble() * 2 - 1) * 0.3);
        var gw = Random(n * k, 15);
        layer.Forward();
        var grad = new float[layer.Theta.Length];
        layer.Backward(gw.ToArray(), grad);
        layer.Forward();
        var shared = gw.Concat(Random(9, 16)).ToArray();   // a buffer longer than the layer's N·K
        var head = new float[layer.HeadLength];
        layer.BackwardInPlace(shared, head);
        Assert.Equal(grad[..head.Length], head);
        if (method == RoundingMethod.FlexRound)
        {
            Assert.Equal(layer.OffsetP, head.Length);
            Assert.Equal(grad[layer.OffsetP..], shared[..(n * k)]);    // ∂P over ∂L/∂Ŵ
        }
        else
        {
            Assert.Equal(layer.Theta.Length, head.Length);
            Assert.Equal(gw, shared[..(n * k)]);                     // LRQ leaves ∂L/∂Ŵ as it was
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void StraightThroughGradientsMatchFiniteDifferences(RoundingMethod method, string format, int group, bool symmetric)
    {
        int n = 10, k = 16, t = 24, rank = 3;
        var fmt = QuantFormat.Parse(format);
        var (w, rtn) = Layer(n, k, fmt, group, symmetric, 9);
        var x = Random(t * k, 10);
        // W8A8 form: quantized inputs against the float target.
        var iq = new InputQuantizer(0.02f, symmetric ? 0 : 3, -128, 127);
        var xq = new float[x.Length];
        iq.Apply(x, xq);
        var layer = new RoundingLayer(w, rtn, method, rank, 11);
        var rng = new Random(12);
        for (int i = 0; i < layer.Theta.Length; i++) layer.Theta[i] += (float)((rng.NextDouble() * 2 - 1) * 0.3);
        layer.Forward();
        var gw = new float[n * k];
        RoundingTrainer.Loss(x, xq, t, k, w, layer.Weights, n, gw);
        var grad = new float[layer.Theta.Length];
        layer.Backward(gw, grad);

        // The straight-through estimator is the exact gradient of the surrogate that keeps each element's rounding offset (and
        // clamped elements' integer) frozen at θ0: Ŵ(θ) = s1(θ)·(y(θ) + δ0) inside the grid, s1(θ)·(q0 − z) outside.
        var theta0 = layer.Theta.Select(v => (double)v).ToArray();
        int groups = rtn.Groups, gs = group == 0 ? k : group;
        double[] Expo(double[] th)
        {
            var e = new double[n * k];
            for (int r = 0; r < n; r++)
                for (int c = 0; c < k; c++)
                {
                    double p = 0;
                    if (method == RoundingMethod.FlexRound) p = th[layer.OffsetP + r * k + c];
                    else for (int j = 0; j < rank; j++) p += th[layer.OffsetP + r * rank + j] * th[layer.OffsetU + j * k + c];
                    e[r * k + c] = th[r * groups + c / gs] + p + th[layer.OffsetR + r] + th[layer.OffsetC + c];
                }
            return e;
        }
        var e0 = Expo(theta0);
        var frozen = new double[n * k];
        var inside = new bool[n * k];
        for (int i = 0; i < n * k; i++)
        {
            int gi = i / k * groups + i % k / gs, zp = rtn.ZeroPointAt(i / k, i % k);
            double y = w[i] / (rtn.Scales[gi] * Math.Exp(e0[i]));
            double q = Math.Round(y, MidpointRounding.ToEven) + zp;
            inside[i] = q >= fmt.Min && q <= fmt.Max;
            frozen[i] = inside[i] ? q - zp - y : Math.Clamp(q, fmt.Min, fmt.Max) - zp;
        }
        double Loss(double[] th)
        {
            var e = Expo(th);
            var what = new double[n * k];
            for (int i = 0; i < n * k; i++)
            {
                int gi = i / k * groups + i % k / gs;
                double s1 = rtn.Scales[gi] * Math.Exp(th[gi]);
                what[i] = inside[i] ? s1 * (w[i] / (rtn.Scales[gi] * Math.Exp(e[i])) + frozen[i]) : s1 * frozen[i];
            }
            double l = 0;
            for (int a = 0; a < t; a++)
                for (int r = 0; r < n; r++)
                {
                    double d = 0;
                    for (int c = 0; c < k; c++) d += xq[a * k + c] * what[r * k + c] - x[a * k + c] * w[r * k + c];
                    l += d * d;
                }
            return l / (t * n);
        }
        double scale = grad.Max(v => Math.Abs((double)v));
        Assert.True(scale > 0);
        int checkedCount = 0;
        for (int i = 0; i < theta0.Length; i += Math.Max(1, theta0.Length / 60))
        {
            var plus = (double[])theta0.Clone();
            var minus = (double[])theta0.Clone();
            plus[i] += 1e-5;
            minus[i] -= 1e-5;
            double fd = (Loss(plus) - Loss(minus)) / 2e-5;
            Assert.True(Math.Abs(fd - grad[i]) <= 2e-3 * scale + 1e-3 * Math.Abs(fd),
                $"θ[{i}]: analytic {grad[i]}, finite difference {fd}");
            checkedCount++;
        }
        Assert.True(checkedCount >= 30);
    }

    private static (float[] W, QuantizedWeight Rtn, List<StoredMatrix> X) Problem(bool fp8Cache)
    {
        int n = 24, k = 64;
        var (w, rtn) = Layer(n, k, QuantFormat.Int4, 32, true, 13);
        // Correlated inputs with a few strong channels, as activations are.
        var rng = new Random(14);
        var xs = new List<StoredMatrix>();
        for (int s = 0; s < 6; s++)
        {
            var x = new float[32 * k];
            for (int a = 0; a < 32; a++)
            {
                double common = rng.NextDouble() * 2 - 1;
                for (int c = 0; c < k; c++) x[a * k + c] = (float)((rng.NextDouble() * 2 - 1 + common) * (c % 9 == 0 ? 6 : 1));
            }
            xs.Add(fp8Cache ? StoredMatrix.PerTensor(x, k) : StoredMatrix.Float32(x, k));
        }
        return (w, rtn, xs);
    }

    [Theory]
    [InlineData(RoundingMethod.FlexRound, false, false)]
    [InlineData(RoundingMethod.FlexRound, true, true)]
    [InlineData(RoundingMethod.Lrq, true, true)]
    public void TrainingLowersTheOutputErrorAndIsDeterministic(RoundingMethod method, bool fp8Cache, bool fp8Moments)
    {
        var (w, rtn, xs) = Problem(fp8Cache);
        var settings = new RoundingSettings
        {
            Method = method, Iterations = 300, LearningRate = method == RoundingMethod.Lrq ? 1e-2 : 5e-3, Seed = 3,
            Fp8Moments = fp8Moments, Patience = 0,
        };
        var a = RoundingTrainer.Train(w, rtn, xs, null, settings);
        var b = RoundingTrainer.Train(w, rtn, xs, null, settings);
        Assert.False(a.KeptRtn);
        Assert.Equal(300, a.Iterations);
        Assert.True(a.LearnedError < 0.8 * a.RtnError, $"learned {a.LearnedError} vs RTN {a.RtnError}");
        Assert.Equal(a.Weight.Values, b.Weight.Values);
        Assert.Equal(a.Weight.Scales, b.Weight.Scales);
        Assert.Equal(a.LearnedError, b.LearnedError);
        Assert.NotEqual(rtn.Values, a.Weight.Values);
        // Stored weights are on the grid: the dequantized matrix is what the loop optimised.
        Assert.All(a.Weight.Values, v => Assert.InRange(v, -8, 7));
    }

    [Fact]
    public void EarlyStopEndsAConvergedRun()
    {
        var (w, rtn, xs) = Problem(false);
        var o = RoundingTrainer.Train(w, rtn, xs, null,
            new RoundingSettings { Iterations = 4000, LearningRate = 1e-7, Patience = 2, MinImprovement = 1e-2 });
        Assert.True(o.StoppedEarly);
        Assert.True(o.Iterations < 4000);
        Assert.Equal(2, o.Curve.Count);
    }
}
