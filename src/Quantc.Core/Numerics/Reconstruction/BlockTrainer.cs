using System.Diagnostics;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>One calibration sequence of a block: its input as the quantized model so far computes it, and the float model's output
/// (both [t, D]).</summary>
public sealed record BlockSample(StoredMatrix Input, StoredMatrix Target);

/// <summary>What learning one block's roundings gave.</summary>
/// <param name="Weights">The seven quantized weights kept (learned, or round-to-nearest's when learning did not lower the error).</param>
/// <param name="RtnError">‖y(Ŵ_RTN) − y_float‖² / ‖y_float − x‖² over the selection samples (the held-out ones, see
/// <see cref="RoundingSettings.Holdout"/>; every sample when none are held out): the block's output error relative to what the
/// block adds to its input.</param>
/// <param name="LearnedError">The same for the kept roundings (the best snapshot on the selection samples).</param>
/// <param name="KeptRtn">Whether round-to-nearest was kept.</param>
/// <param name="Iterations">Adam steps run.</param>
/// <param name="StoppedEarly">Whether the early stop ended training before the last step.</param>
/// <param name="Seconds">Wall time of the block.</param>
/// <param name="StateBytes">Bytes of the seven layers' Adam moments.</param>
/// <param name="Curve">The relative error over the selection samples at the end of each window, in order.</param>
/// <param name="LinearGflops">Throughput of the block's linear work: forward and backward GEMM FLOPs over the training steps' time
/// (error evaluations excluded; attention and element-wise work count as time, not FLOPs).</param>
/// <param name="Selection">The hold-out split, the step kept and the errors over the training samples.</param>
public sealed record BlockOutcome(QuantizedWeight[] Weights, double RtnError, double LearnedError, bool KeptRtn, int Iterations,
    bool StoppedEarly, double Seconds, long StateBytes, IReadOnlyList<double> Curve, double LinearGflops, Selection Selection);

/// <summary>
/// Block-wise reconstruction (FlexRound / LRQ's setting): the seven linears of a <see cref="LlamaBlock"/> learn their roundings
/// together by Adam on mean((y(x̃; Ŵ) − y_float)²), x̃ the block's input from the quantized previous blocks, y_float the float
/// model's output; ∂L/∂Ŵ through the whole block by the hand-written backward, then each <see cref="RoundingLayer.Backward"/>.
/// Early stop, best snapshot and hold-out as <see cref="RoundingTrainer"/>. Deterministic for a seed.
/// </summary>
public static class BlockTrainer
{
    /// <summary>Bytes of training state besides the sample caches: per linear its float weight (the caller's, which the layer reads
    /// in place), the layer's arrays (<see cref="RoundingLayer.WorkBytes"/>), parameters, the part of their gradient not written
    /// over ∂L/∂Ŵ (<see cref="RoundingLayer.HeadLength"/>), moments and the best weights' snapshot (integers and scales); one
    /// ∂L/∂Ŵ of the largest linear (the linears' gradients are completed and applied one at a time); and one tape of
    /// <paramref name="maxT"/> tokens per sequence of a step.</summary>
    public static long EstimateBytes(LlamaBlockShape shape, QuantizedWeight[] rtn, RoundingSettings s, int maxT, bool quantized = false)
    {
        long total = 0;
        foreach (var q in rtn)
        {
            long head = q.N * (long)q.Groups + q.N + q.K, p = head + (s.Method == RoundingMethod.FlexRound ? (long)q.N * q.K
                : (long)s.RankFor(q.N, q.K) * (q.N + q.K));
            if (s.Method == RoundingMethod.Lrq) head = p;
            total += 4L * q.N * q.K + RoundingLayer.WorkBytes(q.N, q.K, s.Method) + 4 * (p + head)
                + Adam.EstimateStateBytes(p, s.Fp8Moments, s.MomentGroup) + q.N * (long)q.K + 4L * q.N * q.Groups;
        }
        return total + 4 * rtn.Max(q => (long)q.N * q.K) + Math.Max(1, s.BatchSamples) * BlockTape.BytesFor(shape, maxT, quantized);
    }

    /// <summary>Learns the roundings of <paramref name="w"/> (seven float [N, K] weights) from <paramref name="rtn"/>; with
    /// <paramref name="quantizers"/> the linears read their inputs quantized as at run time (W8A8; see
    /// <see cref="LlamaBlock.Forward"/>), the targets staying the float block's.</summary>
    public static BlockOutcome Train(LlamaBlock block, float[][] w, QuantizedWeight[] rtn, IReadOnlyList<BlockSample> samples,
        RoundingSettings s, InputQuantizer?[]? quantizers = null)
    {
        if (samples.Count == 0) throw new ArgumentException("no block samples");
        int d = block.Shape.Hidden;
        var sizes = block.Shape.LinearSizes;
        if (w.Length != 7 || rtn.Length != 7 || Enumerable.Range(0, 7).Any(i => rtn[i].N != sizes[i].N || rtn[i].K != sizes[i].K))
            throw new ArgumentException("the block needs its seven weights in q, k, v, o, gate, up, down order at the block's sizes");
        var clock = Stopwatch.StartNew();
        var layers = new RoundingLayer[7];
        var adams = new Adam[7];
        var heads = new float[7][];
        var what = new float[7][];
        for (int i = 0; i < 7; i++)
        {
            layers[i] = new RoundingLayer(w[i], rtn[i], s.Method, s.RankFor(rtn[i].N, rtn[i].K), s.Seed + i);
            adams[i] = new Adam(layers[i].ParameterCount, s.LearningRate, s.Iterations, s.Fp8Moments, s.ExpandMoments, s.MomentGroup);
            heads[i] = new float[layers[i].HeadLength];
            layers[i].Forward();
            what[i] = layers[i].Weights;
        }
        // ∂L/∂Ŵ of one linear at a time (summed over the step's sequences, then turned into θ's gradient in place and applied), so
        // the block never holds the seven at once, nor FlexRound's ∂P besides them.
        var dw = new float[sizes.Max(z => z.N * z.K)];
        var buffers = new Dictionary<int, (float[] X, float[] T, float[] Y)>();
        (float[] X, float[] T, float[] Y) Load(BlockSample b)
        {
            int t = b.Input.Rows;
            if (!buffers.TryGetValue(t, out var buf)) buffers[t] = buf = (new float[t * d], new float[t * d], new float[t * d]);
            b.Input.Read(0, t, buf.X);
            b.Target.Read(0, t, buf.T);
            return buf;
        }
        double Energy(IEnumerable<BlockSample> set)
        {
            double energy = 0;
            foreach (var b in set)
            {
                var (x, tg, _) = Load(b);
                for (int i = 0; i < x.Length; i++) energy += (double)(tg[i] - x[i]) * (tg[i] - x[i]);
            }
            return energy;
        }
        double FullError(IEnumerable<BlockSample> set, double energy)
        {
            double err = 0;
            foreach (var b in set)
            {
                var (x, tg, y) = Load(b);
                block.Forward(x, b.Input.Rows, what, y, 0, quantizers);
                for (int i = 0; i < y.Length; i++) err += (double)(y[i] - tg[i]) * (y[i] - tg[i]);
            }
            return err / Math.Max(energy, 1e-30);
        }
        // Training and selection samples: with nothing held out both are every sample, measured once.
        var split = s.SplitOf(samples.Count);
        var train = split.Train.Select(i => samples[i]).ToArray();
        var held = split.Active ? split.HeldOut.Select(i => samples[i]).ToArray() : null;
        double trainEnergy = Energy(train), heldEnergy = held is null ? 0 : Energy(held);
        (double Select, double Train) Errors()
        {
            double t = FullError(train, trainEnergy);
            return (held is null ? t : FullError(held, heldEnergy), t);
        }
        var (rtnErr, trainRtnErr) = Errors();
        var tracker = new WindowTracker(s, split, rtnErr, trainRtnErr);
        // The best point's weights (integers and scales: a byte per weight, not θ's four for FlexRound), taken when it is reached;
        // restoring its θ and running Forward would give the same.
        QuantizedWeight[]? bestWeights = null;
        int done = 0;
        var rng = new Random(s.Seed);
        var order = (int[])split.Train.Clone();
        int cursor = order.Length;
        var dy = new Dictionary<(int Slot, int T), float[]>();
        long linearMacs = sizes.Sum(z => (long)z.N * z.K), flops = 0;
        long loopStart = Stopwatch.GetTimestamp();
        int batch = Math.Min(s.BatchSamples, order.Length);
        var picked = new BlockSample[batch];
        var tapes = new BlockTape[batch];
        var dys = new float[batch][];
        for (int it = 0; it < s.Iterations; it++)
        {
            long tokens = 0;
            for (int b = 0; b < batch; b++)
            {
                if (cursor == order.Length) { rng.Shuffle(order); cursor = 0; }
                picked[b] = samples[order[cursor++]];
                tokens += picked[b].Input.Rows;
            }
            float f = (float)(2.0 / (tokens * d));
            // Each sequence its own tape: the activations' backward of every sequence first, then each linear's ∂L/∂Ŵ summed over
            // the sequences in order (the same sums as one sequence's whole backward after another).
            for (int b = 0; b < batch; b++)
            {
                int t = picked[b].Input.Rows;
                var (x, tg, y) = Load(picked[b]);
                tapes[b] = block.Forward(x, t, what, y, b, quantizers);
                if (!dy.TryGetValue((b, t), out var g)) dy[(b, t)] = g = new float[t * d];
                for (int i = 0; i < g.Length; i++) g[i] = f * (y[i] - tg[i]);
                dys[b] = g;
                block.BackwardActivations(tapes[b], what, g, null);
                flops += 6 * t * linearMacs;
            }
            foreach (int i in LlamaBlock.GradientOrder)
            {
                Array.Clear(dw, 0, sizes[i].N * sizes[i].K);
                for (int b = 0; b < batch; b++) block.WeightGradient(i, tapes[b], dys[b], dw);
                layers[i].BackwardInPlace(dw, heads[i]);
                adams[i].Step(layers[i].Theta, heads[i], dw);
                layers[i].Forward();
            }
            done = it + 1;
            if (tracker.EndsWindow(done))
            {
                long evalStart = Stopwatch.GetTimestamp();
                var (err, trainErr) = Errors();
                loopStart += Stopwatch.GetTimestamp() - evalStart;
                if (tracker.Record(done, err, trainErr))
                {
                    bestWeights = null;     // the previous snapshot can go before the next is made
                    bestWeights = layers.Select((l, i) => l.Result(rtn[i])).ToArray();
                }
                if (tracker.Stopped) break;
            }
        }
        double loopSeconds = (Stopwatch.GetTimestamp() - loopStart) / (double)Stopwatch.Frequency;
        var result = bestWeights ?? rtn.ToArray();
        return new BlockOutcome(result, rtnErr, tracker.Best, bestWeights is null && done > 0, done, tracker.Stopped,
            clock.Elapsed.TotalSeconds, adams.Sum(a => a.StateBytes), tracker.Curve, loopSeconds > 0 ? flops / loopSeconds / 1e9 : 0,
            tracker.Selection());
    }
}
