using System.Diagnostics;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>One calibration sequence of a block: its input as the quantized model so far computes it, and the float model's output
/// (both [t, D]).</summary>
public sealed record BlockSample(StoredMatrix Input, StoredMatrix Target);

/// <summary>What learning one block's roundings gave.</summary>
/// <param name="Weights">The seven quantized weights kept (learned, or round-to-nearest's when learning did not lower the error).</param>
/// <param name="RtnError">‖y(Ŵ_RTN) − y_float‖² / ‖y_float − x‖² over every sample: the block's output error relative to what the
/// block adds to its input.</param>
/// <param name="LearnedError">The same for the learned roundings.</param>
/// <param name="KeptRtn">Whether round-to-nearest was kept.</param>
/// <param name="Iterations">Adam steps run.</param>
/// <param name="StoppedEarly">Whether the early stop ended training before the last step.</param>
/// <param name="Seconds">Wall time of the block.</param>
/// <param name="StateBytes">Bytes of the seven layers' Adam moments.</param>
/// <param name="Curve">The relative error over every sample at the end of each window, in order.</param>
/// <param name="LinearGflops">Throughput of the block's linear work: forward and backward GEMM FLOPs over the training steps' time
/// (error evaluations excluded; attention and element-wise work count as time, not FLOPs).</param>
public sealed record BlockOutcome(QuantizedWeight[] Weights, double RtnError, double LearnedError, bool KeptRtn, int Iterations,
    bool StoppedEarly, double Seconds, long StateBytes, IReadOnlyList<double> Curve, double LinearGflops);

/// <summary>
/// Block-wise reconstruction (FlexRound / LRQ's setting): the seven linears of a <see cref="LlamaBlock"/> learn their roundings
/// together by Adam on mean((y(x̃; Ŵ) − y_float)²), x̃ the block's input from the quantized previous blocks, y_float the float
/// model's output; ∂L/∂Ŵ through the whole block by the hand-written backward, then each <see cref="RoundingLayer.Backward"/>.
/// Early stop and best snapshot as <see cref="RoundingTrainer"/>. Deterministic for a seed.
/// </summary>
public static class BlockTrainer
{
    /// <summary>Bytes of training state besides the sample caches: per linear its float weight (the caller's, which the layer reads
    /// in place), ∂L/∂Ŵ, the layer's arrays (<see cref="RoundingLayer.WorkBytes"/>), parameters, gradient and moments; and one
    /// tape of <paramref name="maxT"/> tokens.</summary>
    public static long EstimateBytes(LlamaBlockShape shape, QuantizedWeight[] rtn, RoundingSettings s, int maxT)
    {
        long total = 0;
        foreach (var q in rtn)
        {
            long p = q.N * (long)q.Groups + q.N + q.K + (s.Method == RoundingMethod.FlexRound ? (long)q.N * q.K
                : (long)s.RankFor(q.N, q.K) * (q.N + q.K));
            total += 8L * q.N * q.K + RoundingLayer.WorkBytes(q.N, q.K, s.Method) + 8 * p
                + Adam.EstimateStateBytes(p, s.Fp8Moments, s.MomentGroup);
        }
        return total + BlockTape.BytesFor(shape, maxT);
    }

    /// <summary>Learns the roundings of <paramref name="w"/> (seven float [N, K] weights) from <paramref name="rtn"/>.</summary>
    public static BlockOutcome Train(LlamaBlock block, float[][] w, QuantizedWeight[] rtn, IReadOnlyList<BlockSample> samples,
        RoundingSettings s)
    {
        if (samples.Count == 0) throw new ArgumentException("no block samples");
        int d = block.Shape.Hidden;
        var sizes = block.Shape.LinearSizes;
        if (w.Length != 7 || rtn.Length != 7 || Enumerable.Range(0, 7).Any(i => rtn[i].N != sizes[i].N || rtn[i].K != sizes[i].K))
            throw new ArgumentException("the block needs its seven weights in q, k, v, o, gate, up, down order at the block's sizes");
        var clock = Stopwatch.StartNew();
        var layers = new RoundingLayer[7];
        var adams = new Adam[7];
        var grads = new float[7][];
        var dw = new float[7][];
        var what = new float[7][];
        for (int i = 0; i < 7; i++)
        {
            layers[i] = new RoundingLayer(w[i], rtn[i], s.Method, s.RankFor(rtn[i].N, rtn[i].K), s.Seed + i);
            adams[i] = new Adam(layers[i].ParameterCount, s.LearningRate, s.Iterations, s.Fp8Moments, s.ExpandMoments, s.MomentGroup);
            grads[i] = new float[layers[i].ParameterCount];
            dw[i] = new float[rtn[i].N * rtn[i].K];
            layers[i].Forward();
            what[i] = layers[i].Weights;
        }
        var buffers = new Dictionary<int, (float[] X, float[] T, float[] Y)>();
        (float[] X, float[] T, float[] Y) Load(BlockSample b)
        {
            int t = b.Input.Rows;
            if (!buffers.TryGetValue(t, out var buf)) buffers[t] = buf = (new float[t * d], new float[t * d], new float[t * d]);
            b.Input.Read(0, t, buf.X);
            b.Target.Read(0, t, buf.T);
            return buf;
        }
        double energy = 0;
        foreach (var b in samples)
        {
            var (x, tg, _) = Load(b);
            for (int i = 0; i < x.Length; i++) energy += (double)(tg[i] - x[i]) * (tg[i] - x[i]);
        }
        double FullError()
        {
            double err = 0;
            foreach (var b in samples)
            {
                var (x, tg, y) = Load(b);
                block.Forward(x, b.Input.Rows, what, y);
                for (int i = 0; i < y.Length; i++) err += (double)(y[i] - tg[i]) * (y[i] - tg[i]);
            }
            return err / Math.Max(energy, 1e-30);
        }
        double rtnErr = FullError(), best = rtnErr;
        float[][]? bestTheta = null;
        var curve = new List<double>();
        int window = Math.Max(25, s.Iterations / 40), strikes = 0, done = 0;
        bool stopped = false;
        var rng = new Random(s.Seed);
        var order = Enumerable.Range(0, samples.Count).ToArray();
        int cursor = order.Length;
        var dy = new Dictionary<int, float[]>();
        long linearMacs = sizes.Sum(z => (long)z.N * z.K), flops = 0;
        long loopStart = Stopwatch.GetTimestamp();
        int batch = Math.Min(s.BatchSamples, samples.Count);
        var picked = new BlockSample[batch];
        for (int it = 0; it < s.Iterations; it++)
        {
            long tokens = 0;
            for (int i = 0; i < 7; i++) Array.Clear(dw[i]);
            for (int b = 0; b < batch; b++)
            {
                if (cursor == order.Length) { rng.Shuffle(order); cursor = 0; }
                picked[b] = samples[order[cursor++]];
                tokens += picked[b].Input.Rows;
            }
            float f = (float)(2.0 / (tokens * d));
            foreach (var b in picked)
            {
                int t = b.Input.Rows;
                var (x, tg, y) = Load(b);
                var tape = block.Forward(x, t, what, y);
                if (!dy.TryGetValue(t, out var g)) dy[t] = g = new float[t * d];
                for (int i = 0; i < g.Length; i++) g[i] = f * (y[i] - tg[i]);
                block.Backward(tape, what, g, dw, null);
                flops += 6 * t * linearMacs;
            }
            for (int i = 0; i < 7; i++)
            {
                layers[i].Backward(dw[i], grads[i]);
                adams[i].Step(layers[i].Theta, grads[i]);
                layers[i].Forward();
            }
            done = it + 1;
            if (done % window == 0 || done == s.Iterations)
            {
                long evalStart = Stopwatch.GetTimestamp();
                double err = FullError();
                loopStart += Stopwatch.GetTimestamp() - evalStart;
                curve.Add(err);
                if (err < best * (1 - s.MinImprovement)) strikes = 0;
                else if (s.Patience > 0 && ++strikes >= s.Patience && done < s.Iterations) stopped = true;
                if (err < best) { best = err; bestTheta = layers.Select(l => (float[])l.Theta.Clone()).ToArray(); }
                if (stopped) break;
            }
        }
        double loopSeconds = (Stopwatch.GetTimestamp() - loopStart) / (double)Stopwatch.Frequency;
        var result = new QuantizedWeight[7];
        for (int i = 0; i < 7; i++)
        {
            if (bestTheta is null) { result[i] = rtn[i]; continue; }
            bestTheta[i].CopyTo(layers[i].Theta, 0);
            layers[i].Forward();
            result[i] = layers[i].Result(rtn[i]);
        }
        return new BlockOutcome(result, rtnErr, best, bestTheta is null && done > 0, done, stopped, clock.Elapsed.TotalSeconds,
            adams.Sum(a => a.StateBytes), curve, loopSeconds > 0 ? flops / loopSeconds / 1e9 : 0);
    }
}
