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

    [Fact]
    public void WeightGradientsSummedAfterEverySequencesBackwardEqualTheWholeBackwardsBitForBit()
    {
        var (block, w) = Block(21);
        // Three sequences, two of the same length (one tape per slot, so the second does not overwrite the first).
        int[] lengths = [6, 9, 6];
        var xs = lengths.Select((t, i) => Random(t * 16, 60 + i, 2)).ToArray();
        var dys = lengths.Select((t, i) => Random(t * 16, 70 + i)).ToArray();
        var y = new float[9 * 16];
        var whole = w.Select(a => new float[a.Length]).ToArray();
        for (int s = 0; s < 3; s++)
            block.Backward(block.Forward(xs[s], lengths[s], w, y[..(lengths[s] * 16)]), w, dys[s], whole, null);
        var tapes = new BlockTape[3];
        for (int s = 0; s < 3; s++)
        {
            tapes[s] = block.Forward(xs[s], lengths[s], w, y[..(lengths[s] * 16)], s);
            block.BackwardActivations(tapes[s], w, dys[s], null);
        }
        var shared = new float[w.Max(a => a.Length) + 5];
        foreach (int i in LlamaBlock.GradientOrder)
        {
            Array.Clear(shared);
            for (int s = 0; s < 3; s++) block.WeightGradient(i, tapes[s], dys[s], shared);
            Assert.Equal(whole[i], shared[..w[i].Length]);
            Assert.All(shared[w[i].Length..], v => Assert.Equal(0f, v));
        }
        Assert.Equal(Enumerable.Range(0, 7), LlamaBlock.GradientOrder.Order());
    }

    /// <summary>One input quantizer per linear from the float activations of <paramref name="z"/>: q/k/v share H1's, gate/up H2's;
    /// <paramref name="make"/>(amax, min, max) builds each.</summary>
    private static InputQuantizer[] Quantizers(BlockTape z, Func<float, float, float, InputQuantizer> make)
    {
        InputQuantizer Of(float[] x) => make(x.Max(MathF.Abs), x.Min(), x.Max());
        var h1 = Of(z.H1);
        var h2 = Of(z.H2);
        return [h1, h1, h1, Of(z.Ctx), h2, h2, Of(z.M)];
    }

    [Fact]
    public void QuantizedInputsBackwardMatchesFiniteDifferencesOfTheClippedSurrogate()
    {
        // A grid of 1e-6 clipped at 70 % of each input's largest magnitude: the fake quantization is then the clip to within 5e-7,
        // whose derivative is the straight-through estimator's (1 inside the grid, 0 where clamped). (The grid's steps add noise of
        // about Σ|∂L/∂x|·step / h to a difference: at a 1e-4 grid that was 0.03, as large as the gradients checked.)
        int t = 6;
        var (block, w) = Block(22);
        var x = Random(t * 16, 32, 2);
        var r = Random(t * 16, 33);
        var y = new float[t * 16];
        var qs = Quantizers(block.Forward(x, t, w, y), (amax, _, _) =>
        {
            int levels = (int)(0.7f * amax / 1e-6f);
            return new InputQuantizer(1e-6f, 0, -levels, levels);
        });
        var tape = block.Forward(x, t, w, y, 0, qs);
        int clipped = 0;
        foreach (var (q, a) in new[] { (qs[0], tape.H1), (qs[3], tape.Ctx), (qs[4], tape.H2), (qs[6], tape.M) })
        {
            var g = Enumerable.Repeat(1f, a.Length).ToArray();
            q.ZeroOutside(a, g);
            clipped += g.Count(v => v == 0);
        }
        Assert.True(clipped > 10, $"only {clipped} inputs clipped: the mask would not be tested");
        double Loss() { block.Forward(x, t, w, y, 0, qs); return Dot(r, y); }
        var dw = w.Select(a => new float[a.Length]).ToArray();
        var dx = new float[x.Length];
        block.Backward(tape, w, r, dw, dx);
        for (int i = 0; i < 7; i++) CheckGradient(w[i], dw[i], Loss, $"quantized block d{LlamaBlock.Roles[i]}", stride: 7);
        CheckGradient(x, dx, Loss, "quantized block dx", stride: 3);
        // The float block's gradient is a different one (the clipped inputs pass no gradient above).
        var floatDw = w.Select(a => new float[a.Length]).ToArray();
        block.Backward(block.Forward(x, t, w, y), w, r, floatDw, null);
        Assert.NotEqual(floatDw[0], dw[0]);
    }

    [Fact]
    public void Uint8InputsGiveTheExactGradientOfTheLastLinearAndChangeTheOutput()
    {
        // Run-time-like uint8 per-tensor quantizers (min-max, zero point): the down projection's weight sees a fixed quantized
        // input, so L is linear in it and its gradient is exact; every linear reads a quantized copy.
        int t = 7;
        var (block, w) = Block(23);
        var x = Random(t * 16, 34, 2);
        var r = Random(t * 16, 35);
        var y = new float[t * 16];
        var yFloat = new float[t * 16];
        var qs = Quantizers(block.Forward(x, t, w, yFloat), (_, lo, hi) =>
        {
            float scale = (Math.Max(hi, 0) - Math.Min(lo, 0)) / 255f;
            return new InputQuantizer(scale, (int)MathF.Round(-Math.Min(lo, 0) / scale), 0, 255);
        });
        var tape = block.Forward(x, t, w, y, 0, qs);
        Assert.NotEqual(yFloat, y);
        Assert.NotSame(tape.H1, tape.Inputs[0]);
        Assert.Same(tape.Inputs[0], tape.Inputs[2]);               // q, k, v share one quantized copy
        var expect = new float[tape.M.Length];
        qs[6].Apply(tape.M, expect);
        Assert.Equal(expect, tape.Inputs[6]);
        var dw = w.Select(a => new float[a.Length]).ToArray();
        block.Backward(tape, w, r, dw, null);
        double Loss() { block.Forward(x, t, w, y, 0, qs); return Dot(r, y); }
        CheckGradient(w[6], dw[6], Loss, "uint8 block ddown", h: 1e-2f, tolerance: 5e-3);
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
            Fp8Moments = fp8, Holdout = 0,  // every sample trains and selects: the loop's fit is what is tested
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
    public void BlockTrainingWithQuantizedInputsKeepsRtnAtStepZeroAndLowersTheError()
    {
        var (block, w, rtn, samples) = Problem(false);
        var y = new float[12 * 16];
        var tape = block.Forward(Read(samples[1].Input), 12, w, y);
        var qs = Quantizers(tape, (_, lo, hi) =>
        {
            float scale = (Math.Max(hi, 0) - Math.Min(lo, 0)) / 255f;
            return new InputQuantizer(scale, (int)MathF.Round(-Math.Min(lo, 0) / scale), 0, 255);
        });
        var zero = BlockTrainer.Train(block, w, rtn, samples, new RoundingSettings { Iterations = 0 }, qs);
        for (int i = 0; i < 7; i++) Assert.Same(rtn[i], zero.Weights[i]);
        var s = new RoundingSettings
        {
            Method = RoundingMethod.FlexRound, Iterations = 150, LearningRate = 5e-3, Seed = 5, Patience = 0, Holdout = 0,
        };
        var a = BlockTrainer.Train(block, w, rtn, samples, s, qs);
        var b = BlockTrainer.Train(block, w, rtn, samples, s, qs);
        var weightOnly = BlockTrainer.Train(block, w, rtn, samples, s);
        // The quantized inputs add error no weight rounding removes: RTN's error is higher than without them.
        Assert.True(a.RtnError > weightOnly.RtnError, $"{a.RtnError} vs {weightOnly.RtnError}");
        Assert.True(a.LearnedError < 0.9 * a.RtnError, $"learned {a.LearnedError} vs RTN {a.RtnError}");
        Assert.Equal(a.Curve, b.Curve);
        for (int i = 0; i < 7; i++) Assert.Equal(a.Weights[i].Values, b.Weights[i].Values);
    }

    private static float[] Read(StoredMatrix m)
    {
        var x = new float[m.Rows * m.Columns];
        m.Read(0, m.Rows, x);
        return x;
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
