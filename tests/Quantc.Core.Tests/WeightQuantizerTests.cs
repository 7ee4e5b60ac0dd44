using Quantc.Core.Numerics;

namespace Quantc.Core.Tests;

public class WeightQuantizerTests
{
    [Theory]
    [InlineData("int4", 32, 37, 160)]
    [InlineData("int4", 64, 37, 192)]
    [InlineData("int8", 0, 37, 200)]     // per channel, with a scalar tail of 8
    [InlineData("int4", 0, 1400, 200)]   // on the thread pool
    public void RtnGivesTheElementQuantizersBits(string format, int group, int n, int k)
    {
        // Vector rounding (32 values at a time) against Quantizer.QuantizeInt per element: ties (x / s = k + ½), NaN, ±∞, zeros.
        var f = QuantFormat.Parse(format);
        var rng = new Random(group + format.Length);
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i % 7);
        for (int c = 0; c < 3; c++)
        {
            // Row c: a group whose scale is exactly 1 (absmax = the format's max) with half-way values.
            w[c * k] = (float)f.Max;
            for (int j = 1; j < 32; j++) w[c * k + j] = (j % 4 - 2) + 0.5f * (j % 2 == 0 ? 1 : -1);
        }
        w[5 * k + 3] = float.NaN;
        w[6 * k + 40] = float.PositiveInfinity;
        w[7 * k + 9] = float.NegativeInfinity;
        for (int j = 0; j < k; j++) w[8 * k + j] = 0;
        var q = WeightQuantizer.Rtn(w, n, k, f, group);
        int g = group == 0 ? k : group, groups = k / g;
        for (int r = 0; r < n; r++)
            for (int gi = 0; gi < groups; gi++)
            {
                var slice = w.AsSpan(r * k + gi * g, g);
                float s = WeightQuantizer.ScaleFor(slice, f);
                Assert.Equal(BitConverter.SingleToUInt32Bits(s), BitConverter.SingleToUInt32Bits(q.Scales[r * groups + gi]));
                for (int j = 0; j < g; j++)
                    Assert.Equal((sbyte)Quantizer.QuantizeInt(slice[j], s, 0, f), q.Values[r * k + gi * g + j]);
            }
    }

    private static float[] Gauss(int n, Random rng) =>
        Enumerable.Range(0, n).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();

    [Fact]
    public void RtnIsQuantizeLinearWithAbsmaxScales()
    {
        var rng = new Random(1);
        const int n = 8, k = 64;
        var w = Gauss(n * k, rng);
        var qw = WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, groupSize: 32);
        Assert.Equal(n * 2, qw.Scales.Length);
        var layout = Quantizer.Layout.Along([n, k], axis: 1, blockSize: 32);
        var bytes = Quantizer.Quantize(w, QuantFormat.Int4, layout, qw.Scales);
        var viaLinear = Quantizer.Dequantize(bytes, n * k, QuantFormat.Int4, layout, qw.Scales);
        Assert.Equal(viaLinear, qw.Dequantize());
        Assert.All(qw.Values, v => Assert.InRange(v, (sbyte)-8, (sbyte)7));
    }

    /// <summary>Asymmetric RTN is QuantizeLinear with min-max scales and per-channel zero points, and beats symmetric RTN on one-sided rows.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    public void AsymmetricRtnIsQuantizeLinearWithZeroPointsAndBeatsSymmetricOnSkewedRows(int group)
    {
        var rng = new Random(2);
        const int n = 8, k = 64;
        var w = Gauss(n * k, rng).Select((v, i) => (i / k) % 2 == 0 ? MathF.Abs(v) + 0.5f : v).ToArray(); // even rows one-sided
        var asym = WeightQuantizer.RtnAsymmetric(w, n, k, QuantFormat.Int4, group);
        var sym = WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, group);
        var layout = group == 0 ? Quantizer.Layout.Along([n, k], axis: 0) : Quantizer.Layout.Along([n, k], axis: 1, blockSize: group);
        var zps = asym.ZeroPoints!.Select(z => (int)z).ToArray();
        var bytes = Quantizer.Quantize(w, QuantFormat.Int4, layout, asym.Scales, zps);
        Assert.Equal(Quantizer.Dequantize(bytes, n * k, QuantFormat.Int4, layout, asym.Scales, zps), asym.Dequantize());
        Assert.All(asym.Values, v => Assert.InRange(v, (sbyte)-8, (sbyte)7));
        double Mse(float[] d) => d.Select((v, i) => (double)(v - w[i]) * (v - w[i])).Sum();
        Assert.True(Mse(asym.Dequantize()) < 0.6 * Mse(sym.Dequantize()), $"asymmetric MSE {Mse(asym.Dequantize()):G3} vs symmetric {Mse(sym.Dequantize()):G3}");
    }

    /// <summary>GPTQ must beat RTN on the layer's output error when inputs are correlated (the case it exists for).</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    public void GptqBeatsRtnOnOutputError(int group)
    {
        var rng = new Random(2);
        const int n = 16, k = 64, tokens = 512;
        var w = Gauss(n * k, rng);
        // Correlated inputs: x = z · M with a random mixing matrix.
        var mix = Gauss(k * k, rng);
        var x = new float[tokens * k];
        for (int t = 0; t < tokens; t++)
        {
            var z = Gauss(k, rng);
            for (int j = 0; j < k; j++)
            {
                float s = 0;
                for (int i = 0; i < k; i++) s += z[i] * mix[i * k + j] * (i < 4 ? 3 : 0.3f);
                x[t * k + j] = s;
            }
        }
        var h = new double[k * k];
        WeightQuantizer.AccumulateHessian(h, x, k);
        double Err(float[] wq)
        {
            double e = 0;
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < n; r++)
                {
                    double d = 0;
                    for (int j = 0; j < k; j++) d += x[t * k + j] * (w[r * k + j] - wq[r * k + j]);
                    e += d * d;
                }
            return e;
        }
        double rtn = Err(WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, group).Dequantize());
        double gptq = Err(WeightQuantizer.Gptq(w, n, k, h, QuantFormat.Int4, group).Dequantize());
        Assert.True(gptq < 0.7 * rtn, $"GPTQ {gptq:G4} vs RTN {rtn:G4}");
    }

    [Fact]
    public void GptqHandlesDeadInputs()
    {
        var rng = new Random(3);
        const int n = 4, k = 32;
        var w = Gauss(n * k, rng);
        var x = Gauss(100 * k, rng);
        for (int t = 0; t < 100; t++) x[t * k + 5] = 0; // input 5 never fires
        var h = new double[k * k];
        WeightQuantizer.AccumulateHessian(h, x, k);
        var q = WeightQuantizer.Gptq(w, n, k, h, QuantFormat.Int8);
        for (int r = 0; r < n; r++) Assert.Equal(0, q.Values[r * k + 5]);
    }

    /// <summary>float8 e4m3fn per-tensor: one scale absmax / 448, the bytes those of the ONNX QuantizeLinear reference, and Dequantize decodes them.</summary>
    [Fact]
    public void Float8PerTensorUsesOneScaleAndTheQuantizeLinearGrid()
    {
        var rng = new Random(8);
        const int n = 6, k = 40;
        var w = Enumerable.Range(0, n * k).Select(i => (float)(rng.NextDouble() - 0.5) * (i == 17 ? 50 : 1)).ToArray();
        var q = WeightQuantizer.Float8PerTensor(w, n, k, QuantFormat.Float8E4M3Fn);
        float s = w.Max(MathF.Abs) / 448f;
        Assert.All(q.Scales, v => Assert.Equal(s, v));
        var bytes = Quantizer.Quantize(w, QuantFormat.Float8E4M3Fn, s);
        Assert.Equal(bytes, q.Values.Select(v => (byte)v).ToArray());
        var back = q.Dequantize();
        Assert.Equal(Quantizer.Dequantize(bytes, n * k, QuantFormat.Float8E4M3Fn, Quantizer.Layout.PerTensor(n * k), [s]), back);
        Assert.Equal(w[17], back[17], 1e-5);                    // the largest maps to ±448 exactly
        Assert.True(w.Zip(back).All(p => Math.Abs(p.First - p.Second) <= Math.Abs(p.First) / 16 + s * 1e-2), "e4m3 has 3 mantissa bits: relative error ≤ 1/16");
        Assert.Throws<ArgumentException>(() => WeightQuantizer.Float8PerTensor(w, n, k, QuantFormat.Int8));
    }
}
