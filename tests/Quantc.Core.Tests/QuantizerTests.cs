using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>Our quantizer against ONNX Runtime's QuantizeLinear (opset 21), bit for bit, for every format and layout.</summary>
public class QuantizerTests
{
    private static float[] Data(int n, float scale, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            x[i] = (i % 7) switch
            {
                0 => (float)Math.Round(rng.NextDouble() * 40 - 20) * scale / 2,    // exact .5 ties on the grid
                1 => (float)(rng.NextDouble() * 2e5 - 1e5),                        // far out of range: saturation
                2 => (float)((rng.NextDouble() - 0.5) * 1e-3),                     // tiny: float8 subnormals
                _ => (float)((rng.NextDouble() - 0.5) * 40 * scale),
            };
        }
        x[3] = -0f;
        return x;
    }

    /// <summary>Runs QuantizeLinear then Cast back to float (or int8 for int4) in ORT, and returns the result as float.</summary>
    private static float[] OrtQuantize(float[] x, long[] shape, QuantFormat f, float[] scales, long[] scaleShape, int[]? zps, int? axis, long? block)
    {
        using var m = Model.Create(opset: 21);
        var g = m.Graph;
        var xin = g.AddInput("x", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } });
        var s = g.AddInitializer(Tensor.FromFloats("scale", scaleShape, scales));
        byte[] zpBytes = zps is null ? new byte[f.ByteSize(scales.Length)] : Quantizer.Quantize(zps.Select(z => (float)z).ToArray(), f, Quantizer.Layout.PerTensor(zps.Length), [1f]);
        var zp = g.AddInitializer(Tensor.FromBytes("zp", f.DataType, scaleShape, zpBytes));
        var q = g.AddNode("QuantizeLinear", [xin, s, zp]);
        if (axis is { } a) q.SetAttribute("axis", (long)a);
        if (block is { } b) q.SetAttribute("block_size", b);
        var cast = g.AddNode("Cast", [q.Output], outputNames: ["y"]);
        cast.SetAttribute("to", 1L);
        g.AddOutput(cast.Output);
        using var session = OrtModel.CreateSession(m);
        using var input = OrtValue.CreateTensorValueFromMemory(x, shape);
        using var ro = new RunOptions();
        using var outs = session.Run(ro, ["x"], [input], ["y"]);
        return outs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static float[] Ours(byte[] q, int n, QuantFormat f) =>
        Quantizer.Dequantize(q, n, f, Quantizer.Layout.PerTensor(n), [1f]);

    public static TheoryData<string> Formats => new() { "int8", "uint8", "int4", "uint4", "int16", "fp8e4m3", "fp8e5m2" };

    [Theory]
    [MemberData(nameof(Formats))]
    public void PerTensorMatchesOnnxRuntimeBitForBit(string name)
    {
        var f = QuantFormat.Parse(name);
        const float scale = 0.037f;
        var x = Data(4096, scale, 1);
        int zp = f.IsFloat ? 0 : f.IsSigned ? -3 : (int)(f.Max / 2);
        var ours = Ours(Quantizer.Quantize(x, f, Quantizer.Layout.PerTensor(x.Length), [scale], f.IsFloat ? default : [zp]), x.Length, f);
        var ort = OrtQuantize(x, [x.Length], f, [scale], [], f.IsFloat ? null : [zp], null, null);
        AssertBitEqual(ort, ours);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void PerChannelMatchesOnnxRuntimeBitForBit(string name)
    {
        var f = QuantFormat.Parse(name);
        const int rows = 64, cols = 24;
        var x = Data(rows * cols, 0.05f, 2);
        var scales = Enumerable.Range(0, cols).Select(c => 0.01f + 0.003f * c).ToArray();
        var layout = Quantizer.Layout.Along([rows, cols], axis: 1);
        var q = Quantizer.Quantize(x, f, layout, scales);
        var ours = Ours(q, x.Length, f);
        var ort = OrtQuantize(x, [rows, cols], f, scales, [cols], null, axis: 1, block: null);
        AssertBitEqual(ort, ours);
    }

    [Theory]
    [InlineData("int4")]
    [InlineData("uint4")]
    [InlineData("int8")]
    public void BlockedMatchesOnnxRuntimeBitForBit(string name)
    {
        var f = QuantFormat.Parse(name);
        const int k = 128, n = 16, block = 32;
        var x = Data(k * n, 0.05f, 3);
        var scales = Enumerable.Range(0, k / block * n).Select(i => 0.02f + 0.001f * i).ToArray();
        var layout = Quantizer.Layout.Along([k, n], axis: 0, blockSize: block);
        Assert.Equal(scales.Length, layout.ScaleCount);
        var q = Quantizer.Quantize(x, f, layout, scales);
        var ours = Ours(q, x.Length, f);
        var ort = OrtQuantize(x, [k, n], f, scales, [k / block, n], null, axis: 0, block: block);
        AssertBitEqual(ort, ours);
    }

    [Fact]
    public void RoundingIsHalfToEvenAndSaturating()
    {
        var q = Quantizer.Quantize([0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 1000f, -1000f, float.NaN], QuantFormat.Int8, 1f);
        Assert.Equal(new sbyte[] { 0, 2, 2, 0, -2, 127, -128, 0 }, q.Select(b => (sbyte)b));
        Assert.Equal(0x7E, Float8.ToE4M3Fn(448f));
        Assert.Equal(0x7E, Float8.ToE4M3Fn(1e9f));
        Assert.Equal(0xFE, Float8.ToE4M3Fn(float.NegativeInfinity));
        Assert.Equal(0x7F, Float8.ToE4M3Fn(float.NaN) & 0x7F);
        Assert.Equal(0x01, Float8.ToE4M3Fn(MathF.ScaleB(1, -9)));   // smallest subnormal
    }

    private static void AssertBitEqual(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            bool same = BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]) ||
                        (float.IsNaN(expected[i]) && float.IsNaN(actual[i])) || (expected[i] == 0 && actual[i] == 0);
            Assert.True(same, $"element {i}: ORT {expected[i]}, ours {actual[i]}");
        }
    }
}
