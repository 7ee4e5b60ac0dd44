using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Onnx.Tests;

/// <summary>Tensor.ToFloat32 against ONNX Runtime's Cast to float, over every encoding of each 8-bit and 4-bit type.</summary>
public class ConversionTests
{
    private static float[] OrtCast(int dataType, long[] dims, byte[] raw)
    {
        using var m = Model.Create(opset: 21);
        var g = m.Graph;
        var c = g.AddNode("Cast", [g.AddInitializer(Tensor.FromBytes("x", dataType, dims, raw))], outputNames: ["y"]);
        c.SetAttribute("to", 1L);
        g.AddOutput(c.Output);
        var (proto, _) = m.ToProto();
        using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var s = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(proto), so);
        using var ro = new RunOptions();
        using var o = s.Run(ro, [], [], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Theory]
    [InlineData((int)DT.Float8E4M3Fn)]
    [InlineData((int)DT.Float8E4M3Fnuz)]
    [InlineData((int)DT.Float8E5M2)]
    [InlineData((int)DT.Float8E5M2Fnuz)]
    [InlineData((int)DT.Int8)]
    [InlineData((int)DT.Uint8)]
    public void EveryByteEncodingMatchesOnnxRuntime(int dataType)
    {
        var raw = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var ours = Tensor.FromBytes("x", dataType, [256], raw).ToFloat32();
        var ort = OrtCast(dataType, [256], raw);
        for (int i = 0; i < 256; i++)
            Assert.True(BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(ort[i]) || (float.IsNaN(ours[i]) && float.IsNaN(ort[i])),
                $"{DataTypes.Name(dataType)} byte 0x{i:X2}: ours {ours[i]}, ORT {ort[i]}");
    }

    [Theory]
    [InlineData((int)DT.Int4)]
    [InlineData((int)DT.Uint4)]
    public void EveryNibbleMatchesOnnxRuntime(int dataType)
    {
        var raw = Enumerable.Range(0, 8).Select(i => (byte)((2 * i) | ((2 * i + 1) << 4))).ToArray(); // nibbles 0..15
        var ours = Tensor.FromBytes("x", dataType, [16], raw).ToFloat32();
        Assert.Equal(OrtCast(dataType, [16], raw), ours);
    }

    [Theory]
    [InlineData((int)DT.Float16)]
    [InlineData((int)DT.Bfloat16)]
    public void SixteenBitFloatsMatchOnnxRuntime(int dataType)
    {
        // Every 257th pattern over the whole 16-bit range, plus the specials.
        var codes = Enumerable.Range(0, 65536).Where(i => i % 257 == 0).Concat([0x7C00, 0xFC00, 0x7E00, 0x7F80, 0xFF80, 0x7FC0, 0x8000, 0x0001]).Select(i => (ushort)i).ToArray();
        var raw = codes.SelectMany(BitConverter.GetBytes).ToArray();
        var ours = Tensor.FromBytes("x", dataType, [codes.Length], raw).ToFloat32();
        var ort = OrtCast(dataType, [codes.Length], raw);
        for (int i = 0; i < codes.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(ort[i]) || (float.IsNaN(ours[i]) && float.IsNaN(ort[i])),
                $"{DataTypes.Name(dataType)} 0x{codes[i]:X4}: ours {ours[i]}, ORT {ort[i]}");
    }

    [Fact]
    public void Float4E2M1DecodesItsEightMagnitudes()
    {
        var raw = Enumerable.Range(0, 8).Select(i => (byte)((2 * i) | ((2 * i + 1) << 4))).ToArray();
        var v = Tensor.FromBytes("x", (int)DT.Float4E2M1, [16], raw).ToFloat32();
        Assert.Equal(new float[] { 0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0f, -0.5f, -1, -1.5f, -2, -3, -4, -6 }, v);
    }

    [Fact]
    public void TypedFieldTensorsConvertLikeRawOnes()
    {
        var t = new TensorProto { Name = "t", DataType = (int)DT.Float16 };
        t.Dims.Add(3);
        t.Int32Data.Add([0x3C00, 0xC000, 0x3800]); // 1, -2, 0.5
        Assert.Equal(new[] { 1f, -2f, 0.5f }, Tensor.FromProto(t).ToFloat32());
    }
}
