using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>MatMulInt4Int8, QSelectiveScan and QCausalConv1d through ONNX Runtime against plain C# references.</summary>
public class MambaOpsTests
{
    private static TypeProto T(int elem) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = elem } };

    private static sbyte[] Int8(int n, Random rng) => Enumerable.Range(0, n).Select(_ => (sbyte)rng.Next(-127, 128)).ToArray();

    private static float[] Run(Model m, params (string Name, OrtValue Value)[] inputs) => RunAll(m, ["y"], inputs)[0];

    private static float[][] RunAll(Model m, string[] outputs, params (string Name, OrtValue Value)[] inputs)
    {
        using var session = OrtModel.CreateSession(m);
        using var ro = new RunOptions();
        using var outs = session.Run(ro, inputs.Select(i => i.Name).ToArray(), inputs.Select(i => i.Value).ToArray(), outputs);
        foreach (var (_, v) in inputs) v.Dispose();
        return outs.Select(o => o.GetTensorDataAsSpan<float>().ToArray()).ToArray();
    }

    private static Model NewModel()
    {
        var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        return m;
    }

    [Theory]
    [InlineData(1, 8, 128, 32)]
    [InlineData(6, 12, 256, 64)]
    [InlineData(3, 5, 256, 128)]
    public void MatMulInt4Int8MatchesTheReferenceExactly(int rows, int n, int k, int group)
    {
        var rng = new Random(n * 7 + k);
        var a = Int8(rows * k, rng);
        var w = Enumerable.Range(0, n * k).Select(_ => (sbyte)rng.Next(-8, 8)).ToArray();
        var ws = Enumerable.Range(0, n * (k / group)).Select(i => 0.01f + 0.0007f * (i % 17)).ToArray();
        var bias = Enumerable.Range(0, n).Select(i => 0.1f * i).ToArray();
        const float aScale = 0.021f;
        using var m = NewModel();
        var g = m.Graph;
        var node = g.AddNode("MatMulInt4Int8", [g.AddInput("a", T(3)), g.AddInitializer(Tensor.FromFloats("as", [], [aScale])),
            g.AddInitializer(Tensor.FromBytes("w", 2, [n, k / 2], Int4Packing.PackChunked(w, n, k))),
            g.AddInitializer(Tensor.FromFloats("ws", [n, k / group], ws)), g.AddInitializer(Tensor.FromFloats("bias", [n], bias))],
            domain: CustomOps.Domain, outputNames: ["y"]);
        node.SetAttribute("group_size", (long)group);
        g.AddOutput(node.Output);
        var y = Run(m, ("a", OrtValue.CreateTensorValueFromMemory(a, [rows, k])));
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                float acc = 0;
                for (int gi = 0; gi < k / group; gi++)
                {
                    int s = 0;
                    for (int t = gi * group; t < (gi + 1) * group; t++) s += a[r * k + t] * w[j * k + t];
                    acc += s * (aScale * ws[j * (k / group) + gi]);
                }
                Assert.Equal(acc + bias[j], y[r * n + j]);
            }
    }

    [Fact]
    public void QSelectiveScanMatchesTheRecurrenceAndReturnsItsState()
    {
        const int B = 2, L = 6, D = 4, N = 3;
        var rng = new Random(4);
        sbyte[] x = Int8(B * L * D, rng), dt = Int8(B * L * D, rng), bm = Int8(B * L * N, rng), cm = Int8(B * L * N, rng), z = Int8(B * L * D, rng);
        var a = Enumerable.Range(0, D * N).Select(i => -0.2f - 0.1f * i).ToArray();
        var dskip = Enumerable.Range(0, D).Select(i => 0.5f + 0.1f * i).ToArray();
        var dtBias = Enumerable.Range(0, D).Select(i => -1f + 0.3f * i).ToArray();
        var h0 = Enumerable.Range(0, B * D * N).Select(i => 0.05f * (i % 7) - 0.1f).ToArray();
        const float xs = 0.02f, dts = 0.015f, bs = 0.03f, cs = 0.025f, zs = 0.04f;

        using var m = NewModel();
        var g = m.Graph;
        Value C(string name, float v) => g.AddInitializer(Tensor.FromFloats(name, [], [v]));
        var node = g.AddNode("QSelectiveScan", [g.AddInput("x", T(3)), C("xs", xs), g.AddInput("dt", T(3)), C("dts", dts),
            g.AddInitializer(Tensor.FromFloats("A", [D, N], a)), g.AddInput("B", T(3)), C("bs", bs), g.AddInput("C", T(3)), C("cs", cs),
            g.AddInitializer(Tensor.FromFloats("D", [D], dskip)), g.AddInput("z", T(3)), C("zs", zs),
            g.AddInitializer(Tensor.FromFloats("dt_bias", [D], dtBias)), g.AddInput("h0", T(1))],
            outputCount: 2, domain: CustomOps.Domain, outputNames: ["y", "h"]);
        g.AddOutput(node.Outputs[0]!);
        g.AddOutput(node.Outputs[1]!);
        var outs = RunAll(m, ["y", "h"],
            ("x", OrtValue.CreateTensorValueFromMemory(x, [B, L, D])), ("dt", OrtValue.CreateTensorValueFromMemory(dt, [B, L, D])),
            ("B", OrtValue.CreateTensorValueFromMemory(bm, [B, L, N])), ("C", OrtValue.CreateTensorValueFromMemory(cm, [B, L, N])),
            ("z", OrtValue.CreateTensorValueFromMemory(z, [B, L, D])), ("h0", OrtValue.CreateTensorValueFromMemory(h0, [B, D, N])));

        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++)
            {
                var h = Enumerable.Range(0, N).Select(n => (double)h0[(b * D + d) * N + n]).ToArray();
                for (int t = 0; t < L; t++)
                {
                    int i = (b * L + t) * D + d;
                    double xv = x[i] * (double)xs, delta = Math.Log(1 + Math.Exp(dt[i] * (double)dts + dtBias[d])), acc = 0;
                    for (int n = 0; n < N; n++)
                    {
                        h[n] = Math.Exp(delta * a[d * N + n]) * h[n] + delta * bm[(b * L + t) * N + n] * (double)bs * xv;
                        acc += cm[(b * L + t) * N + n] * (double)cs * h[n];
                    }
                    double zv = z[i] * (double)zs;
                    double want = (acc + dskip[d] * xv) * zv / (1 + Math.Exp(-zv));
                    Assert.True(Math.Abs(outs[0][i] - want) <= 1e-5 * (1 + Math.Abs(want)), $"y[{i}] {outs[0][i]} vs {want}");
                }
                for (int n = 0; n < N; n++)
                    Assert.True(Math.Abs(outs[1][(b * D + d) * N + n] - h[n]) <= 1e-5 * (1 + Math.Abs(h[n])));
            }
    }

    [Fact]
    public void QCausalConv1dMatchesDirectConvolution()
    {
        const int B = 1, L = 5, D = 2, K = 4;
        var rng = new Random(8);
        var x = Int8(B * L * D, rng);
        float[] w = [0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f], bias = [0.05f, -0.05f];
        const float xs = 0.03f;
        using var m = NewModel();
        var g = m.Graph;
        var node = g.AddNode("QCausalConv1d", [g.AddInput("x", T(3)), g.AddInitializer(Tensor.FromFloats("xs", [], [xs])),
            g.AddInitializer(Tensor.FromFloats("w", [D, K], w)), g.AddInitializer(Tensor.FromFloats("b", [D], bias))],
            domain: CustomOps.Domain, outputNames: ["y"]);
        g.AddOutput(node.Output);
        var y = Run(m, ("x", OrtValue.CreateTensorValueFromMemory(x, [B, L, D])));
        for (int t = 0; t < L; t++)
            for (int d = 0; d < D; d++)
            {
                double acc = bias[d];
                for (int j = 0; j < K; j++)
                {
                    int src = t - (K - 1) + j;
                    if (src >= 0) acc += w[d * K + j] * x[src * D + d] * (double)xs;
                }
                double want = acc / (1 + Math.Exp(-acc));
                Assert.True(Math.Abs(y[t * D + d] - want) <= 1e-5 * (1 + Math.Abs(want)));
            }
    }
}
