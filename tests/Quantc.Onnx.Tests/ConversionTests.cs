using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Onnx.Tests;

/// <summary>
/// Tensor.ToFloat32 against ONNX Runtime — Cast to float, or DequantizeLinear with scale 1 where ORT
/// has no Cast kernel for the type — over every encoding of each 2-, 4-, 8- and 16-bit type.
/// </summary>
public class ConversionTests
{
    /// <summary>ORT's float32 decoding of <paramref name="raw"/>, through Cast(to=float) or DequantizeLinear(x, scale=1).</summary>
    private static float[] OrtDecode(int dataType, long[] dims, byte[] raw, bool dequantize = false, long opset = 21, long irVersion = 10)
    {
        using var m = Model.Create(opset: opset, irVersion: irVersion);
        var g = m.Graph;
        var x = g.AddInitializer(Tensor.FromBytes("x", dataType, dims, raw));
        Node n;
        if (dequantize)
            n = g.AddNode("DequantizeLinear", [x, g.AddInitializer(Tensor.FromFloats("scale", [], [1f]))], outputNames: ["y"]);
        else
        {
            n = g.AddNode("Cast", [x], outputNames: ["y"]);
            n.SetAttribute("to", 1L);
        }
        g.AddOutput(n.Output);
        var (proto, _) = m.ToProto();
        using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var s = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(proto), so);
        using var ro = new RunOptions();
        using var o = s.Run(ro, [], [], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static void SameBits(int dataType, float[] ours, float[] ort, Func<int, string> code)
    {
        Assert.Equal(ort.Length, ours.Length);
        for (int i = 0; i < ours.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(ort[i]) || (float.IsNaN(ours[i]) && float.IsNaN(ort[i])),
                $"{DataTypes.Name(dataType)} {code(i)}: ours {ours[i]} (0x{BitConverter.SingleToInt32Bits(ours[i]):X8}), ORT {ort[i]} (0x{BitConverter.SingleToInt32Bits(ort[i]):X8})");
    }

    /// <summary>Every code of a type narrower than a byte, packed low bits first.</summary>
    private static byte[] AllSubByteCodes(int bits)
    {
        int n = 1 << bits;
        var raw = new byte[(n * bits + 7) / 8];
        for (int i = 0; i < n; i++) raw[i * bits / 8] |= (byte)(i << (i * bits % 8));
        return raw;
    }

    [Theory]
    [InlineData((int)DT.Float8E4M3Fn, 21L, 10L)]
    [InlineData((int)DT.Float8E4M3Fnuz, 21L, 10L)]
    [InlineData((int)DT.Float8E5M2, 21L, 10L)]
    [InlineData((int)DT.Float8E5M2Fnuz, 21L, 10L)]
    [InlineData((int)DT.Float8E8M0, 24L, 11L)]
    [InlineData((int)DT.Int8, 21L, 10L)]
    [InlineData((int)DT.Uint8, 21L, 10L)]
    [InlineData((int)DT.Bool, 21L, 10L)]
    public void EveryByteEncodingMatchesOnnxRuntime(int dataType, long opset, long ir)
    {
        var raw = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        if (dataType == (int)DT.Bool) raw = [0, 1]; // a bool byte is 0 or 1
        var ours = Tensor.FromBytes("x", dataType, [raw.Length], raw).ToFloat32();
        SameBits(dataType, ours, OrtDecode(dataType, [raw.Length], raw, opset: opset, irVersion: ir), i => $"byte 0x{raw[i]:X2}");
    }

    [Theory]
    [InlineData((int)DT.Int4, 21L, 10L)]
    [InlineData((int)DT.Uint4, 21L, 10L)]
    [InlineData((int)DT.Int2, 25L, 12L)]
    [InlineData((int)DT.Uint2, 25L, 12L)]
    public void EverySubByteCodeMatchesOnnxRuntime(int dataType, long opset, long ir)
    {
        int bits = DataTypes.BitsOf(dataType);
        var raw = AllSubByteCodes(bits);
        var ours = Tensor.FromBytes("x", dataType, [1 << bits], raw).ToFloat32();
        SameBits(dataType, ours, OrtDecode(dataType, [1 << bits], raw, opset: opset, irVersion: ir), i => $"code {i}");
    }

    /// <summary>The quantized types once more through DequantizeLinear(x, scale = 1), the op a quantized model decodes them with.</summary>
    [Theory]
    [InlineData((int)DT.Int8)]
    [InlineData((int)DT.Uint8)]
    [InlineData((int)DT.Float8E4M3Fn)]
    [InlineData((int)DT.Float8E4M3Fnuz)]
    [InlineData((int)DT.Float8E5M2)]
    [InlineData((int)DT.Float8E5M2Fnuz)]
    [InlineData((int)DT.Int4)]
    [InlineData((int)DT.Uint4)]
    public void DequantizeLinearWithUnitScaleAgrees(int dataType)
    {
        int bits = DataTypes.BitsOf(dataType);
        var raw = bits == 8 ? Enumerable.Range(0, 256).Select(i => (byte)i).ToArray() : AllSubByteCodes(bits);
        long n = 1 << bits;
        var ours = Tensor.FromBytes("x", dataType, [n], raw).ToFloat32();
        SameBits(dataType, ours, OrtDecode(dataType, [n], raw, dequantize: true), i => $"code {i}");
    }

    [Theory]
    [InlineData((int)DT.Float16)]
    [InlineData((int)DT.Bfloat16)]
    [InlineData((int)DT.Int16)]
    [InlineData((int)DT.Uint16)]
    public void EverySixteenBitCodeMatchesOnnxRuntime(int dataType)
    {
        var codes = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var raw = MemoryMarshal.AsBytes(codes.AsSpan()).ToArray();
        var ours = Tensor.FromBytes("x", dataType, [codes.Length], raw).ToFloat32();
        SameBits(dataType, ours, OrtDecode(dataType, [codes.Length], raw), i => $"0x{codes[i]:X4}");
    }

    [Theory]
    [InlineData((int)DT.Int32)]
    [InlineData((int)DT.Uint32)]
    [InlineData((int)DT.Int64)]
    [InlineData((int)DT.Uint64)]
    [InlineData((int)DT.Double)]
    [InlineData((int)DT.Float)]
    public void WideTypesMatchOnnxRuntime(int dataType)
    {
        // Random bit patterns plus the extremes: rounding to float32 must agree with ORT's Cast.
        int size = DataTypes.BitsOf(dataType) / 8;
        var rng = new Random(dataType);
        var raw = new byte[4096 * size];
        rng.NextBytes(raw);
        byte[][] specials = size == 4 ? [[0, 0, 0, 0], [0xFF, 0xFF, 0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0x7F], [0, 0, 0, 0x80], [1, 0, 0, 0]]
            : [[0, 0, 0, 0, 0, 0, 0, 0], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], [0, 0, 0, 0, 0, 0, 0, 0x80], [1, 0, 0, 0, 0, 0, 0, 0]];
        for (int k = 0; k < specials.Length; k++) specials[k].CopyTo(raw, k * size);
        // Small integers too (random 64-bit patterns are all huge).
        for (int k = 0; k < 256; k++) BitConverter.GetBytes((long)(k - 128)).AsSpan(0, size).CopyTo(raw.AsSpan((specials.Length + k) * size));
        long n = raw.Length / size;
        var ours = Tensor.FromBytes("x", dataType, [n], raw).ToFloat32();
        SameBits(dataType, ours, OrtDecode(dataType, [n], raw), i => $"element {i} (0x{Convert.ToHexString(raw, i * size, size)})");
    }

    /// <summary>ONNX Runtime's CPU provider has no kernel that reads float4e2m1 (neither Cast nor DequantizeLinear): check against the spec's table.</summary>
    [Fact]
    public void Float4E2M1DecodesItsEightMagnitudes()
    {
        var raw = AllSubByteCodes(4);
        var v = Tensor.FromBytes("x", (int)DT.Float4E2M1, [16], raw).ToFloat32();
        Assert.Equal(new float[] { 0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0f, -0.5f, -1, -1.5f, -2, -3, -4, -6 }, v);
    }

    [Fact]
    public void OddLengthSubByteTensorsIgnoreThePaddingBits()
    {
        // 3 int4 values in 2 bytes; the high nibble of the last byte is padding.
        var v = Tensor.FromBytes("x", (int)DT.Int4, [3], new byte[] { 0x7F, 0xF8 }).ToFloat32();
        Assert.Equal(new float[] { -1, 7, -8 }, v);
    }

    [Fact]
    public void TypedFieldTensorsConvertLikeRawOnes()
    {
        var t = new TensorProto { Name = "t", DataType = (int)DT.Float16 };
        t.Dims.Add(3);
        t.Int32Data.Add([0x3C00, 0xC000, 0x3800]); // 1, -2, 0.5
        Assert.Equal(new[] { 1f, -2f, 0.5f }, Tensor.FromProto(t).ToFloat32());

        var f8 = new TensorProto { Name = "f8", DataType = (int)DT.Float8E4M3Fn };
        f8.Dims.Add(2);
        f8.Int32Data.Add([0x38, 0xC0]); // 1, -2
        Assert.Equal(new[] { 1f, -2f }, Tensor.FromProto(f8).ToFloat32());

        var d = new TensorProto { Name = "d", DataType = (int)DT.Double };
        d.Dims.Add(2);
        d.DoubleData.Add([0.25, -3]);
        Assert.Equal(new[] { 0.25f, -3f }, Tensor.FromProto(d).ToFloat32());

        var u = new TensorProto { Name = "u", DataType = (int)DT.Uint32 };
        u.Dims.Add(2);
        u.Uint64Data.Add([7, 4_000_000_000]);
        Assert.Equal(new[] { 7f, 4e9f }, Tensor.FromProto(u).ToFloat32());
    }
}
