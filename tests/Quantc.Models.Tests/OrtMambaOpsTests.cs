using Microsoft.ML.OnnxRuntime;
using Google.Protobuf;
using Quantc.Ir;
using Quantc.Ir.Building;
using Xunit.Abstractions;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models.Tests;

/// <summary>
/// What models/README.md says about a fused Mamba flavor, checked against the ONNX Runtime in
/// Directory.Packages.props: it has no dedicated Mamba (selective-scan) op, but its CPU provider runs
/// com.microsoft CausalConvWithState (whose schema names Mamba) and LinearAttention, whose "gated" rule
/// with a per-key-dimension decay computes Mamba-1's selective scan exactly. No fused Mamba flavor is
/// built yet; these tests keep the statement true.
/// </summary>
public class OrtMambaOpsTests(ITestOutputHelper output)
{
    private static float[] Rand(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray(); }

    private static float[][] Run(Model m, Dictionary<string, (float[] D, long[] S)> ins)
    {
        var (proto, _) = m.ToProto();
        using var s = new InferenceSession(proto.ToByteArray());
        var vals = ins.ToDictionary(kv => kv.Key, kv => OrtValue.CreateTensorValueFromMemory(kv.Value.D, kv.Value.S));
        try
        {
            using var ro = new RunOptions();
            using var res = s.Run(ro, vals, s.OutputNames);
            return res.Select(r => r.GetTensorDataAsSpan<float>().ToArray()).ToArray();
        }
        finally { foreach (var v in vals.Values) v.Dispose(); }
    }

    [Fact]
    public void CausalConvWithStateIsMambasCausalDepthwiseConv()
    {
        int C = 4, L = 5, K = 4;
        using var m = Model.Create("g", 18, irVersion: 8);
        m.SetOpset("com.microsoft", 1);
        var b = new OnnxBuilder(m.Graph);
        var x = b.Input("x", DT.Float, 1, C, L);
        var st = b.Input("st", DT.Float, 1, C, K - 1);
        var w = Rand(C * K, 1); var bias = Rand(C, 2);
        var wv = m.Graph.AddInitializer(Tensor.FromFloats("w", [C, 1, K], w), "w");
        var bv = m.Graph.AddInitializer(Tensor.FromFloats("b", [C], bias), "b");
        var n = b.AddNode("CausalConvWithState", [x, wv, bv, st], 2, "com.microsoft");
        b.Output(n.Outputs[0]!, "y", DT.Float, 1, C, L);
        b.Output(n.Outputs[1]!, "ps", DT.Float, 1, C, K - 1);
        var xd = Rand(C * L, 3); var sd = Rand(C * (K - 1), 4);
        var r = Run(m, new() { ["x"] = (xd, [1, C, L]), ["st"] = (sd, [1, C, K - 1]) });
        double err = 0;
        for (int c = 0; c < C; c++)
            for (int t = 0; t < L; t++)
            {
                double acc = bias[c];
                for (int j = 0; j < K; j++) { int p = t + j; double v = p < K - 1 ? sd[c * (K - 1) + p] : xd[c * L + p - (K - 1)]; acc += w[c * K + j] * v; }
                err = Math.Max(err, Math.Abs(acc - r[0][c * L + t]));
            }
        // The carried state is the last K − 1 inputs.
        for (int c = 0; c < C; c++)
            for (int j = 0; j < K - 1; j++) err = Math.Max(err, Math.Abs(xd[c * L + L - (K - 1) + j] - r[1][c * (K - 1) + j]));
        output.WriteLine($"CausalConvWithState max err {err}");
        Assert.True(err < 1e-5);
    }

    [Fact]
    public void MambaScanAsGatedLinearAttention()
    {
        int D = 3, N = 4, T = 5; // heads = channels D, d_k = N, d_v = 1
        using var m = Model.Create("g", 18, irVersion: 8);
        m.SetOpset("com.microsoft", 1);
        var b = new OnnxBuilder(m.Graph);
        var q = b.Input("q", DT.Float, 1, T, D * N);
        var k = b.Input("k", DT.Float, 1, T, D * N);
        var v = b.Input("v", DT.Float, 1, T, D);
        var s0 = b.Input("s0", DT.Float, 1, D, N, 1);
        var g = b.Input("g", DT.Float, 1, T, D * N);
        var n = b.AddNode("LinearAttention", [q, k, v, s0, g], 2, "com.microsoft");
        n.SetAttribute("q_num_heads", (long)D); n.SetAttribute("kv_num_heads", (long)D);
        n.SetAttribute("update_rule", "gated"); n.SetAttribute("scale", 1f);
        b.Output(n.Outputs[0]!, "y", DT.Float, 1, T, D);
        b.Output(n.Outputs[1]!, "s", DT.Float, 1, D, N, 1);
        // Mamba: h_t[d,n] = exp(Δ[t,d]·A[d,n])·h + Δ[t,d]·x[t,d]·B[t,n]; y[t,d] = Σ_n C[t,n]·h_t[d,n]
        var dt = Rand(T * D, 5).Select(z => 0.5f * (z + 1.1f)).ToArray(); var A = Rand(D * N, 6).Select(z => -1 - 3 * Math.Abs(z)).ToArray();
        var xs = Rand(T * D, 7); var Bm = Rand(T * N, 8); var Cm = Rand(T * N, 9); var h0 = Rand(D * N, 10);
        var qd = new float[T * D * N]; var kd = new float[T * D * N]; var vd = new float[T * D]; var gd = new float[T * D * N];
        for (int t = 0; t < T; t++) for (int d = 0; d < D; d++) { vd[t * D + d] = dt[t * D + d] * xs[t * D + d]; for (int j = 0; j < N; j++) { qd[(t * D + d) * N + j] = Cm[t * N + j]; kd[(t * D + d) * N + j] = Bm[t * N + j]; gd[(t * D + d) * N + j] = dt[t * D + d] * A[d * N + j]; } }
        var r = Run(m, new() { ["q"] = (qd, [1, T, D * N]), ["k"] = (kd, [1, T, D * N]), ["v"] = (vd, [1, T, D]), ["s0"] = (h0, [1, D, N, 1]), ["g"] = (gd, [1, T, D * N]) });
        var h = (float[])h0.Clone(); double err = 0;
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++)
            {
                double y = 0;
                for (int j = 0; j < N; j++) { h[d * N + j] = (float)(Math.Exp(dt[t * D + d] * A[d * N + j]) * h[d * N + j] + vd[t * D + d] * Bm[t * N + j]); y += Cm[t * N + j] * h[d * N + j]; }
                err = Math.Max(err, Math.Abs(y - r[0][t * D + d]));
            }
        for (int i = 0; i < D * N; i++) err = Math.Max(err, Math.Abs(h[i] - r[1][i]));   // the final state too
        output.WriteLine($"LinearAttention gated as Mamba scan max err {err}");
        Assert.True(err < 1e-4);
    }
}
