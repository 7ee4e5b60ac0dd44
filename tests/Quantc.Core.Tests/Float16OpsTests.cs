using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>
/// The float16 kernels of MatMulInt8, MatMulInt4Int8 and QSelectiveScan (scales, bias and y in float16: the output takes
/// the scales' type) and QSelectiveScan's int8 output y_q, through ONNX Runtime: each equals the float32 kernel's
/// result (tested against C# references elsewhere) converted to float16 / quantized in C#, bit for bit.
/// </summary>
public class Float16OpsTests
{
    private const int F = (int)TensorProto.Types.DataType.Float, H = (int)TensorProto.Types.DataType.Float16, I8 = (int)TensorProto.Types.DataType.Int8;

    private static TypeProto T(int elem) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = elem } };

    private static sbyte[] Int8(int n, Random rng) => Enumerable.Range(0, n).Select(_ => (sbyte)rng.Next(-127, 128)).ToArray();

    /// <summary>Values exactly representable in float16, so both kernels see the same scales.</summary>
    private static float[] HalfExact(IEnumerable<float> v) => v.Select(x => (float)(Half)x).ToArray();

    private static Value Const(Graph g, string name, long[] dims, float[] v, bool half) =>
        g.AddInitializer(half ? Tensor.FromValues(name, H, dims, v.Select(x => (Half)x).ToArray()) : Tensor.FromFloats(name, dims, v));

    private static Model NewModel()
    {
        var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        return m;
    }

    /// <summary>Runs <paramref name="m"/>; every output as float (float16 outputs widened exactly) or, for int8, as its values.</summary>
    private static float[][] Run(Model m, string[] outputs, params (string Name, Func<OrtValue> Make)[] inputs)
    {
        using var session = OrtModel.CreateSession(m);
        using var ro = new RunOptions();
        var values = inputs.Select(i => i.Make()).ToArray();
        try
        {
            using var outs = session.Run(ro, inputs.Select(i => i.Name).ToArray(), values, outputs);
            return outs.Select(o => o.GetTensorTypeAndShape().ElementDataType switch
            {
                TensorElementType.Float16 => MemoryMarshal.Cast<Float16, Half>(o.GetTensorDataAsSpan<Float16>()).ToArray().Select(h => (float)h).ToArray(),
                TensorElementType.Int8 => o.GetTensorDataAsSpan<sbyte>().ToArray().Select(b => (float)b).ToArray(),
                _ => o.GetTensorDataAsSpan<float>().ToArray(),
            }).ToArray();
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    private static void AssertHalfOf(float[] f32, float[] f16, string what)
    {
        Assert.Equal(f32.Length, f16.Length);
        for (int i = 0; i < f32.Length; i++)
            Assert.True((float)(Half)f32[i] == f16[i] || (float.IsNaN(f32[i]) && float.IsNaN(f16[i])), $"{what}[{i}]: float16 kernel {f16[i]}, float32 kernel {f32[i]} → {(float)(Half)f32[i]}");
    }

    [Theory]
    [InlineData(1, 64, 64, true)]
    [InlineData(7, 33, 200, false)]
    [InlineData(32, 96, 512, true)]
    public void MatMulInt8InFloat16IsTheFloat32ResultRounded(int rows, int n, int k, bool withBias)
    {
        var rng = new Random(rows + n * 3);
        var a = Int8(rows * k, rng);
        var b = Int8(n * k, rng);
        var bScale = HalfExact(Enumerable.Range(0, n).Select(i => 0.0004f * (i + 1)));
        var bias = HalfExact(Enumerable.Range(0, n).Select(i => 0.25f * i - 3));
        float[] aScale = HalfExact([0.0173f]);
        float[] Once(bool half)
        {
            using var m = NewModel();
            var g = m.Graph;
            var inputs = new List<Value?> { g.AddInput("a", T(I8)), Const(g, "as", [], aScale, half), g.AddInitializer(Tensor.FromValues<sbyte>("b", I8, [n, k], b)), Const(g, "bs", [n], bScale, half) };
            if (withBias) inputs.Add(Const(g, "bias", [n], bias, half));
            g.AddOutput(g.AddNode("MatMulInt8", inputs, domain: CustomOps.Domain, outputNames: ["y"]).Output);
            return Run(m, ["y"], ("a", () => OrtValue.CreateTensorValueFromMemory(a, [rows, k])))[0];
        }
        AssertHalfOf(Once(false), Once(true), "y");
    }

    [Theory]
    [InlineData(1, 8, 128, 32)]
    [InlineData(6, 12, 256, 64)]
    public void MatMulInt4Int8InFloat16IsTheFloat32ResultRounded(int rows, int n, int k, int group)
    {
        var rng = new Random(n * 5 + k);
        var a = Int8(rows * k, rng);
        var w = Enumerable.Range(0, n * k).Select(_ => (sbyte)rng.Next(-8, 8)).ToArray();
        var ws = HalfExact(Enumerable.Range(0, n * (k / group)).Select(i => 0.01f + 0.0007f * (i % 17)));
        var bias = HalfExact(Enumerable.Range(0, n).Select(i => 0.1f * i));
        float[] aScale = HalfExact([0.021f]);
        float[] Once(bool half)
        {
            using var m = NewModel();
            var g = m.Graph;
            var node = g.AddNode("MatMulInt4Int8", [g.AddInput("a", T(I8)), Const(g, "as", [], aScale, half),
                g.AddInitializer(Tensor.FromBytes("w", 2, [n, k / 2], Int4Packing.PackChunked(w, n, k))), Const(g, "ws", [n, k / group], ws, half), Const(g, "bias", [n], bias, half)],
                domain: CustomOps.Domain, outputNames: ["y"]);
            node.SetAttribute("group_size", (long)group);
            g.AddOutput(node.Output);
            return Run(m, ["y"], ("a", () => OrtValue.CreateTensorValueFromMemory(a, [rows, k])))[0];
        }
        AssertHalfOf(Once(false), Once(true), "y");
    }

    /// <summary>
    /// QSelectiveScan with every optional input: the float16 kernel's y is the float32 kernel's y rounded to float16,
    /// its state h stays float32 and equal, and y_q (either kernel) is saturate(round_half_even(y / y_scale)) of the float32 y.
    /// </summary>
    [Theory]
    [InlineData(1, 9, 77, 16)]
    [InlineData(2, 17, 130, 16)]
    public void QSelectiveScanInFloat16AndWithAnInt8Output(int B, int L, int D, int N)
    {
        var rng = new Random(B + L * 7 + D);
        sbyte[] x = Int8(B * L * D, rng), dt = Int8(B * L * D, rng), bm = Int8(B * L * N, rng), cm = Int8(B * L * N, rng), z = Int8(B * L * D, rng);
        var a = Enumerable.Range(0, D * N).Select(i => -0.2f - 0.1f * (i % 23)).ToArray();
        var dskip = Enumerable.Range(0, D).Select(i => 0.5f + 0.1f * (i % 9)).ToArray();
        var dtBias = Enumerable.Range(0, D).Select(i => -1f + 0.3f * (i % 7)).ToArray();
        var h0 = Enumerable.Range(0, B * D * N).Select(i => 0.05f * (i % 7) - 0.1f).ToArray();
        float[] scales = HalfExact([0.02f, 0.015f, 0.03f, 0.025f, 0.04f]);
        float[] yScale = HalfExact([0.003f]);
        float[][] Once(bool half, bool quantized)
        {
            using var m = NewModel();
            var g = m.Graph;
            var inputs = new List<Value> { g.AddInput("x", T(I8)), Const(g, "xs", [], [scales[0]], half), g.AddInput("dt", T(I8)), Const(g, "dts", [], [scales[1]], half),
                g.AddInitializer(Tensor.FromFloats("A", [D, N], a)), g.AddInput("B", T(I8)), Const(g, "bs", [], [scales[2]], half), g.AddInput("C", T(I8)), Const(g, "cs", [], [scales[3]], half),
                g.AddInitializer(Tensor.FromFloats("D", [D], dskip)), g.AddInput("z", T(I8)), Const(g, "zs", [], [scales[4]], half),
                g.AddInitializer(Tensor.FromFloats("dt_bias", [D], dtBias)), g.AddInput("h0", T(F)) };
            if (quantized) inputs.Add(Const(g, "ys", [], yScale, half));
            string[] names = quantized ? ["y", "h", "y_q"] : ["y", "h"];
            var node = g.AddNode("QSelectiveScan", [.. inputs], domain: CustomOps.Domain, outputNames: names);
            foreach (var o in node.Outputs) g.AddOutput(o!);
            return Run(m, names, ("x", () => OrtValue.CreateTensorValueFromMemory(x, [B, L, D])), ("dt", () => OrtValue.CreateTensorValueFromMemory(dt, [B, L, D])),
                ("B", () => OrtValue.CreateTensorValueFromMemory(bm, [B, L, N])), ("C", () => OrtValue.CreateTensorValueFromMemory(cm, [B, L, N])),
                ("z", () => OrtValue.CreateTensorValueFromMemory(z, [B, L, D])), ("h0", () => OrtValue.CreateTensorValueFromMemory(h0, [B, D, N])));
        }
        var f32 = Once(half: false, quantized: false);
        var f16 = Once(half: true, quantized: true);
        var q32 = Once(half: false, quantized: true);
        AssertHalfOf(f32[0], f16[0], "y");
        Assert.Equal(f32[1], f16[1]);                 // the state is float32 in both
        Assert.Equal(f32[0], q32[0]);                 // asking for y_q leaves y as it was
        var want = f32[0].Select(v => Math.Clamp(MathF.Round(v / yScale[0], MidpointRounding.ToEven), -128f, 127f)).ToArray();
        Assert.Equal(want, q32[2]);
        Assert.Equal(want, f16[2]);                   // y_q comes from the float32 y in the float16 kernel too
        Assert.Contains(want, v => v is -128 or 127); // the scale saturates some: the clamp is exercised
        Assert.True(want.Distinct().Count() > 50, "y_q should spread over the int8 range");
    }

    [Fact]
    public void QSelectiveScanRefusesAnInt8OutputWithoutItsScale()
    {
        using var m = NewModel();
        var g = m.Graph;
        Value S(string name) => Const(g, name, [], [0.03125f], false);
        var node = g.AddNode("QSelectiveScan", [g.AddInput("x", T(I8)), S("xs"), g.AddInput("dt", T(I8)), S("dts"), g.AddInitializer(Tensor.FromFloats("A", [2, 1], [-1f, -1f])),
            g.AddInput("B", T(I8)), S("bs"), g.AddInput("C", T(I8)), S("cs")], domain: CustomOps.Domain, outputNames: ["y", "h", "y_q"]);
        foreach (var o in node.Outputs) g.AddOutput(o!);
        var e = Assert.Throws<OnnxRuntimeException>(() => Run(m, ["y", "h", "y_q"], ("x", () => OrtValue.CreateTensorValueFromMemory(new sbyte[2], [1, 1, 2])),
            ("dt", () => OrtValue.CreateTensorValueFromMemory(new sbyte[2], [1, 1, 2])), ("B", () => OrtValue.CreateTensorValueFromMemory(new sbyte[1], [1, 1, 1])),
            ("C", () => OrtValue.CreateTensorValueFromMemory(new sbyte[1], [1, 1, 1]))));
        Assert.Contains("y_q needs y_scale", e.Message);
    }
}
