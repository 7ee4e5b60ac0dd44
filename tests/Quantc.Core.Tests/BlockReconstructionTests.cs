using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;

namespace Quantc.Core.Tests;

/// <summary>Block-wise reconstruction: every block op's hand-written backward against central finite differences of
/// L = Σ r ⊙ op(x) (r fixed and random), the whole LLaMA block's ∂L/∂W and ∂L/∂x, and the block trainer.</summary>
public class BlockReconstructionTests
{
    private static float[] Random(int n, int seed, float scale = 1) => ReconstructionTests.Random(n, seed, scale);

    private static double Dot(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>Checks <paramref name="analytic"/> = ∂L/∂x at every index (or every <paramref name="stride"/>-th) by central
    /// differences of <paramref name="loss"/> with step h; the tolerance is relative to the gradient's largest entry.</summary>
    private static void CheckGradient(float[] x, float[] analytic, Func<double> loss, string what, float h = 1e-2f, int stride = 1,
        double tolerance = 2e-2)
    {
        double scale = analytic.Max(v => Math.Abs((double)v)) + 1e-6;
        Assert.True(scale > 1e-4, $"{what}: gradient vanishes, the check would prove nothing");
        for (int i = 0; i < x.Length; i += stride)
        {
            float keep = x[i];
            x[i] = keep + h;
            double up = loss();
            x[i] = keep - h;
            double down = loss();
            x[i] = keep;
            double numeric = (up - down) / (2 * h);
            Assert.True(Math.Abs(numeric - analytic[i]) <= tolerance * scale,
                $"{what}[{i}]: analytic {analytic[i]} vs finite difference {numeric} (largest {scale})");
        }
    }

    [Fact]
    public void RmsNormBackwardMatchesFiniteDifferences()
    {
        int t = 5, d = 12;
        var x = Random(t * d, 1, 2);
        var g = Random(d, 2);
        var r = Random(t * d, 3);
        var y = new float[t * d];
        var inv = new float[t];
        double Loss() { BlockOps.RmsNorm(x, g, y, inv, t, d, 1e-5f); return Dot(r, y); }
        Loss();
        var dx = new float[t * d];
        BlockOps.RmsNormBackward(x, g, inv, r, dx, t, d, accumulate: false);
        CheckGradient(x, dx, Loss, "rmsnorm dx");
    }

    [Fact]
    public void RopeBackwardIsTheInverseRotation()
    {
        int t = 6, heads = 3, dh = 8;
        var (cos, sin) = BlockOps.RopeTables(t, dh, 10000);
        var x = Random(t * heads * dh, 4);
        var r = Random(x.Length, 5);
        double Loss() { var y = (float[])x.Clone(); BlockOps.Rope(y, t, heads, dh, cos, sin, false); return Dot(r, y); }
        var dx = (float[])r.Clone();
        BlockOps.Rope(dx, t, heads, dh, cos, sin, true);
        CheckGradient(x, dx, Loss, "rope dx");
        // Position 0 is the identity, and the inverse undoes the rotation.
        var z = (float[])x.Clone();
        BlockOps.Rope(z, t, heads, dh, cos, sin, false);
        Assert.Equal(x.AsSpan(0, heads * dh).ToArray(), z.AsSpan(0, heads * dh).ToArray());
        BlockOps.Rope(z, t, heads, dh, cos, sin, true);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - z[i]) < 1e-5, $"inverse rope at {i}");
    }

    [Fact]
    public void CausalGroupedAttentionBackwardMatchesFiniteDifferences()
    {
        int t = 5, heads = 4, kv = 2, dh = 4;
        var q = Random(t * heads * dh, 6);
        var k = Random(t * kv * dh, 7);
        var v = Random(t * kv * dh, 8);
        var r = Random(t * heads * dh, 9);
        var ctx = new float[q.Length];
        var probs = new float[heads * t * t];
        double Loss() { BlockOps.Attention(q, k, v, ctx, probs, t, heads, kv, dh); return Dot(r, ctx); }
        Loss();
        // Causal: the first token attends to itself only.
        for (int h = 0; h < heads; h++) Assert.Equal(1f, probs[h * t * t], 6);
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        BlockOps.AttentionBackward(q, k, v, probs, r, dq, dk, dv, t, heads, kv, dh);
        CheckGradient(q, dq, Loss, "attention dq");
        CheckGradient(k, dk, Loss, "attention dk");
        CheckGradient(v, dv, Loss, "attention dv");
    }

    [Fact]
    public void SwiGluBackwardMatchesFiniteDifferences()
    {
        int n = 40;
        var g = Random(n, 10, 4);
        var u = Random(n, 11, 2);
        var r = Random(n, 12);
        var m = new float[n];
        double Loss() { BlockOps.SwiGlu(g, u, m, n); return Dot(r, m); }
        var dg = new float[n];
        var du = new float[n];
        BlockOps.SwiGluBackward(g, u, r, dg, du, n);
        CheckGradient(g, dg, Loss, "swiglu dg", 1e-3f);
        CheckGradient(u, du, Loss, "swiglu du", 1e-3f);
    }

    private static readonly LlamaBlockShape Shape = new(16, 4, 2, 4, 24, 1e-5f, 10000);

    private static (LlamaBlock Block, float[][] W) Block(int seed)
    {
        var block = new LlamaBlock(Shape, Random(16, seed).Select(v => 1 + 0.3f * v).ToArray(),
            Random(16, seed + 1).Select(v => 1 + 0.3f * v).ToArray());
        var w = Shape.LinearSizes.Select((s, i) => Random(s.N * s.K, seed + 10 + i, 1 / MathF.Sqrt(s.K))).ToArray();
        return (block, w);
    }

    [Fact]
    public void WholeBlockBackwardMatchesFiniteDifferences()
    {
        int t = 6;
        var (block, w) = Block(20);
        var x = Random(t * 16, 30, 2);
        var r = Random(t * 16, 31);
        var y = new float[t * 16];
        double Loss() { block.Forward(x, t, w, y); return Dot(r, y); }
        var tape = block.Forward(x, t, w, y);
        var dw = w.Select(a => new float[a.Length]).ToArray();
        var dx = new float[x.Length];
        block.Backward(tape, w, r, dw, dx);
        for (int i = 0; i < 7; i++) CheckGradient(w[i], dw[i], Loss, $"block d{LlamaBlock.Roles[i]}", stride: 7);
        CheckGradient(x, dx, Loss, "block dx", stride: 3);
        // Backward accumulates ∂L/∂W: a second pass doubles it.
        var once = dw[6].ToArray();
        block.Backward(block.Forward(x, t, w, y), w, r, dw, null);
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], dw[6][i], 4);
    }

    private static (LlamaBlock Block, float[][] W, QuantizedWeight[] Rtn, List<BlockSample> Samples) Problem(bool fp8)
    {
        var (block, w) = Block(40);
        var rtn = Shape.LinearSizes.Select((s, i) => WeightQuantizer.Rtn(w[i], s.N, s.K, QuantFormat.Parse("int4"), 8)).ToArray();
        var samples = new List<BlockSample>();
        for (int s = 0; s < 6; s++)
        {
            int t = 8 + s % 2 * 4;
            var x = Random(t * 16, 50 + s, 2);
            var y = new float[t * 16];
            block.Forward(x, t, w, y);
            // The quantized model's input differs from the float one (as after quantized previous blocks).
            var xq = x.Select((v, i) => v + 0.05f * MathF.Sin(i)).ToArray();
            samples.Add(fp8 ? new BlockSample(StoredMatrix.PerTensor(xq, 16), StoredMatrix.PerTensor(y, 16))
                : new BlockSample(StoredMatrix.Float32(xq, 16), StoredMatrix.Float32(y, 16)));
        }
        return (block, w, rtn, samples);
    }

    [Fact]
    public void StepZeroKeepsRoundToNearest()
    {
        var (block, w, rtn, samples) = Problem(false);
        var o = BlockTrainer.Train(block, w, rtn, samples, new RoundingSettings { Iterations = 0 });
        for (int i = 0; i < 7; i++) Assert.Same(rtn[i], o.Weights[i]);
        Assert.Equal(o.RtnError, o.LearnedError);
    }

    [Theory]
    [InlineData(RoundingMethod.FlexRound, false)]
    [InlineData(RoundingMethod.Lrq, true)]
    public void BlockTrainingLowersTheBlockErrorAndIsDeterministic(RoundingMethod method, bool fp8)
    {
        var (block, w, rtn, samples) = Problem(fp8);
        var s = new RoundingSettings
        {
            Method = method, Iterations = 150, LearningRate = method == RoundingMethod.Lrq ? 1e-2 : 5e-3, Seed = 5, Patience = 0,
            Fp8Moments = fp8,
        };
        var a = BlockTrainer.Train(block, w, rtn, samples, s);
        var b = BlockTrainer.Train(block, w, rtn, samples, s);
        Assert.False(a.KeptRtn);
        Assert.True(a.LearnedError < 0.8 * a.RtnError, $"learned {a.LearnedError} vs RTN {a.RtnError}");
        Assert.Equal(a.LearnedError, b.LearnedError);
        for (int i = 0; i < 7; i++) Assert.Equal(a.Weights[i].Values, b.Weights[i].Values);
        Assert.True(a.LinearGflops > 0);
    }

    [Fact]
    public void BlockTrainingGivesTheSameBytesOnAnyThreadCount()
    {
        var (block, w, rtn, samples) = Problem(true);
        var s = new RoundingSettings { Method = RoundingMethod.Lrq, Iterations = 40, LearningRate = 1e-2, Seed = 3, Patience = 0 };
        int keep = Gemm.MaxThreads;
        try
        {
            Gemm.MaxThreads = 1;
            var one = BlockTrainer.Train(block, w, rtn, samples, s);
            Gemm.MaxThreads = 3;
            var three = BlockTrainer.Train(block, w, rtn, samples, s with { Method = RoundingMethod.Lrq });
            Assert.Equal(one.Curve, three.Curve);
            for (int i = 0; i < 7; i++)
            {
                Assert.Equal(one.Weights[i].Values, three.Weights[i].Values);
                Assert.Equal(one.Weights[i].Scales, three.Weights[i].Scales);
            }
        }
        finally
        {
            Gemm.MaxThreads = keep;
        }
    }
}
