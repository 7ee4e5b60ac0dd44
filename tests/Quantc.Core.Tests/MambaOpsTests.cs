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
    public void QSelectiveScanMatchesTheRecurrenceAndReturnsItsState() => CheckScan(2, 6, 4, 3, 5, strict: true);

    // Sizes that are not multiples of the kernels' vector width (8 / 16) or tile (64), d_state 16 and
    // others, and each count of trailing optional inputs (D; z, z_scale; dt_bias; h0).
    [Theory]
    [InlineData(1, 33, 77, 16, 5)]
    [InlineData(2, 17, 130, 16, 4)]
    [InlineData(1, 9, 64, 1, 3)]
    [InlineData(2, 12, 13, 7, 1)]
    [InlineData(1, 20, 1024, 16, 0)]
    [InlineData(3, 1, 100, 17, 5)]
    public void QSelectiveScanMatchesTheRecurrenceOnOddSizes(int batch, int length, int dim, int state, int optional) =>
        CheckScan(batch, length, dim, state, optional, strict: false);

    /// <summary>
    /// QSelectiveScan through ONNX Runtime against the recurrence in double precision, with the first
    /// <paramref name="optional"/> of its optional inputs (D, z + z_scale, dt_bias, h0). y must be
    /// within 1e-5 of the reference relative to the magnitude of the terms it sums (sum |C_n h_n| + |D x|,
    /// times |silu(z)|): float rounding in C . h scales with those, not with |y|, and on long
    /// sequences the plain float loop is itself ~3e-5 off relative to |y|. <paramref name="strict"/>
    /// also holds y to 1e-5 relative to |y| (the small case).
    /// </summary>
    private static void CheckScan(int B, int L, int D, int N, int optional, bool strict)
    {
        var rng = new Random(4 + D * 31 + N);
        sbyte[] x = Int8(B * L * D, rng), dt = Int8(B * L * D, rng), bm = Int8(B * L * N, rng), cm = Int8(B * L * N, rng), z = Int8(B * L * D, rng);
        var a = Enumerable.Range(0, D * N).Select(i => -0.2f - 0.1f * (i % 23)).ToArray();
        var dskip = Enumerable.Range(0, D).Select(i => 0.5f + 0.1f * (i % 9)).ToArray();
        var dtBias = Enumerable.Range(0, D).Select(i => -1f + 0.3f * (i % 7)).ToArray();
        var h0 = Enumerable.Range(0, B * D * N).Select(i => 0.05f * (i % 7) - 0.1f).ToArray();
        const float xs = 0.02f, dts = 0.015f, bs = 0.03f, cs = 0.025f, zs = 0.04f;
        bool hasD = optional >= 1, hasZ = optional >= 2, hasBias = optional >= 3, hasH0 = optional >= 4;

        using var m = NewModel();
        var g = m.Graph;
        Value C(string name, float v) => g.AddInitializer(Tensor.FromFloats(name, [], [v]));
        var inputs = new List<Value> { g.AddInput("x", T(3)), C("xs", xs), g.AddInput("dt", T(3)), C("dts", dts),
            g.AddInitializer(Tensor.FromFloats("A", [D, N], a)), g.AddInput("B", T(3)), C("bs", bs), g.AddInput("C", T(3)), C("cs", cs) };
        if (hasD) inputs.Add(g.AddInitializer(Tensor.FromFloats("D", [D], dskip)));
        if (hasZ) { inputs.Add(g.AddInput("z", T(3))); inputs.Add(C("zs", zs)); }
        if (hasBias) inputs.Add(g.AddInitializer(Tensor.FromFloats("dt_bias", [D], dtBias)));
        if (hasH0) inputs.Add(g.AddInput("h0", T(1)));
        var node = g.AddNode("QSelectiveScan", [.. inputs], outputCount: 2, domain: CustomOps.Domain, outputNames: ["y", "h"]);
        g.AddOutput(node.Outputs[0]!);
        g.AddOutput(node.Outputs[1]!);
        var feed = new List<(string, OrtValue)> {
            ("x", OrtValue.CreateTensorValueFromMemory(x, [B, L, D])), ("dt", OrtValue.CreateTensorValueFromMemory(dt, [B, L, D])),
            ("B", OrtValue.CreateTensorValueFromMemory(bm, [B, L, N])), ("C", OrtValue.CreateTensorValueFromMemory(cm, [B, L, N])) };
        if (hasZ) feed.Add(("z", OrtValue.CreateTensorValueFromMemory(z, [B, L, D])));
        if (hasH0) feed.Add(("h0", OrtValue.CreateTensorValueFromMemory(h0, [B, D, N])));
        var outs = RunAll(m, ["y", "h"], [.. feed]);

        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++)
            {
                var h = Enumerable.Range(0, N).Select(n => hasH0 ? (double)h0[(b * D + d) * N + n] : 0).ToArray();
                for (int t = 0; t < L; t++)
                {
                    int i = (b * L + t) * D + d;
                    double xv = x[i] * (double)xs, delta = Math.Log(1 + Math.Exp(dt[i] * (double)dts + (hasBias ? dtBias[d] : 0))), acc = 0, mag = 0;
                    for (int n = 0; n < N; n++)
                    {
                        h[n] = Math.Exp(delta * a[d * N + n]) * h[n] + delta * bm[(b * L + t) * N + n] * (double)bs * xv;
                        acc += cm[(b * L + t) * N + n] * (double)cs * h[n];
                        mag += Math.Abs(cm[(b * L + t) * N + n] * (double)cs * h[n]);
                    }
                    double want = acc + (hasD ? dskip[d] * xv : 0);
                    mag += hasD ? Math.Abs(dskip[d] * xv) : 0;
                    if (hasZ)
                    {
                        double zv = z[i] * (double)zs, gate = zv / (1 + Math.Exp(-zv));
                        want *= gate;
                        mag *= Math.Abs(gate);
                    }
                    double err = Math.Abs(outs[0][i] - want);
                    Assert.True(err <= 1e-5 * (1 + mag), $"y[{i}] {outs[0][i]} vs {want} (terms {mag})");
                    if (strict) Assert.True(err <= 1e-5 * (1 + Math.Abs(want)), $"y[{i}] {outs[0][i]} vs {want}");
                }
                for (int n = 0; n < N; n++)
                    Assert.True(Math.Abs(outs[1][(b * D + d) * N + n] - h[n]) <= 1e-5 * (1 + Math.Abs(h[n])), $"h[{b},{d},{n}]");
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
