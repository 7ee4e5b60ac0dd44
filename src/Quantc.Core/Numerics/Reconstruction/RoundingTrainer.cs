using System.Diagnostics;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>Static fake quantization of a layer's input, as the runtime will quantize it: clamp(⌊x / s⌉ + z) − z, times s.</summary>
public sealed record InputQuantizer(float Scale, int ZeroPoint, int Min, int Max)
{
    /// <summary>dst = the quantized-dequantized src.</summary>
    public void Apply(ReadOnlySpan<float> src, Span<float> dst)
    {
        for (int i = 0; i < src.Length; i++)
        {
            double r = Math.Round((double)(src[i] / Scale), MidpointRounding.ToEven) + ZeroPoint;
            dst[i] = (float)((Math.Clamp(r, Min, Max) - ZeroPoint) * Scale);
        }
    }

    /// <summary>The straight-through estimator's backward of <see cref="Apply"/>: the gradient <paramref name="grad"/> with respect to
    /// the quantized x passes unchanged where x's integer lies inside [Min, Max] and is zeroed where the clamp cut it.</summary>
    public void ZeroOutside(ReadOnlySpan<float> x, Span<float> grad)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double r = Math.Round((double)(x[i] / Scale), MidpointRounding.ToEven) + ZeroPoint;
            if (r < Min || r > Max) grad[i] = 0;
        }
    }
}

/// <summary>How a layer's rounding is learned (the defaults are the FlexRound / LRQ reference scripts' for Llama 2 W4A16, batch
/// of 2 sequences).</summary>
public sealed record RoundingSettings
{
    public RoundingMethod Method { get; init; } = RoundingMethod.FlexRound;

    /// <summary>Adam steps.</summary>
    public int Iterations { get; init; } = 5000;

    /// <summary>Adam's initial learning rate (cosine decay to 0).</summary>
    public double LearningRate { get; init; } = 3e-3;

    /// <summary>LRQ's rank; 0: min(N, K) / 4 (the paper's 1024 for 4096-wide layers, scaled to the layer).</summary>
    public int Rank { get; init; }

    /// <summary>Calibration sequences per step.</summary>
    public int BatchSamples { get; init; } = 2;

    public int Seed { get; init; }

    /// <summary>COAT: Adam's moments in FP8 e4m3 groups, with dynamic range expansion when <see cref="ExpandMoments"/>.</summary>
    public bool Fp8Moments { get; init; } = true;
    public bool ExpandMoments { get; init; } = true;
    public int MomentGroup { get; init; } = 128;

    /// <summary>Early stop: the error on the selection rows (the held-out sequences, see <see cref="Holdout"/>; every cached row
    /// when none are held out) is measured after each window of max(25, iterations / 40) steps and the best parameters kept;
    /// training stops after <see cref="Patience"/> windows without a relative improvement of <see cref="MinImprovement"/> on the
    /// best (0 patience: never).</summary>
    public int Patience { get; init; } = 8;
    public double MinImprovement { get; init; } = 1e-3;

    /// <summary>Share of the calibration sequences held out from training (<see cref="HoldoutSplit.Of"/>: chosen with
    /// <see cref="Seed"/>, at least one, none with fewer than <see cref="HoldoutSplit.MinSequences"/>): batches are drawn from the
    /// others, and the early stop, the best snapshot and the choice between the learned rounding and round-to-nearest measure the
    /// error on the held-out rows. 0: every row trains and selects.</summary>
    public double Holdout { get; init; } = DefaultHoldout;

    /// <summary>The default <see cref="Holdout"/>.</summary>
    public const double DefaultHoldout = 0.125;

    /// <summary>The split of <paramref name="sequences"/> calibration sequences for <see cref="Holdout"/> and <see cref="Seed"/>.</summary>
    public HoldoutSplit SplitOf(int sequences) => HoldoutSplit.Of(sequences, Holdout, Seed);

    /// <summary>The rank LRQ uses for an N×K layer.</summary>
    public int RankFor(int n, int k) => Rank > 0 ? Math.Min(Rank, Math.Min(n, k)) : Math.Max(1, Math.Min(n, k) / 4);
}

/// <summary>What learning one layer's rounding gave.</summary>
/// <param name="Weight">The quantized weight kept (the learned one, or round-to-nearest's when learning did not lower the
/// error).</param>
/// <param name="RtnError">Relative output error ‖X̃Ŵᵀ − XWᵀ‖² / ‖XWᵀ‖² of round-to-nearest over the selection rows: the held-out
/// sequences (<see cref="RoundingSettings.Holdout"/>), or every cached row when none are held out.</param>
/// <param name="LearnedError">The same for the kept parameters (the best snapshot on the selection rows).</param>
/// <param name="KeptRtn">Whether round-to-nearest was kept.</param>
/// <param name="Iterations">Adam steps run.</param>
/// <param name="StoppedEarly">Whether the early stop ended training before the last step.</param>
/// <param name="Seconds">Wall time of the layer.</param>
/// <param name="StateBytes">Bytes of Adam's moments.</param>
/// <param name="Curve">The relative error over the selection rows at the end of each window, in order.</param>
/// <param name="GemmGflops">Matrix-product throughput inside the loop (GFLOP/s).</param>
/// <param name="Selection">The hold-out split, the step kept and the errors over the training rows.</param>
public sealed record RoundingOutcome(QuantizedWeight Weight, double RtnError, double LearnedError, bool KeptRtn, int Iterations,
    bool StoppedEarly, double Seconds, long StateBytes, IReadOnlyList<double> Curve, double GemmGflops, Selection Selection);

/// <summary>
/// Layer-wise reconstruction: learns a <see cref="RoundingLayer"/> by Adam on mini-batches of cached inputs X (each a
/// <see cref="StoredMatrix"/>, float32 or COAT's FP8), minimising the mean of (X̃ Ŵᵀ − X Wᵀ)² where X̃ is X quantized as the
/// runtime will (W8A8) or X itself (weight-only). Hand-written backward: E = X̃Ŵᵀ − XWᵀ, ∂L/∂Ŵ = 2/(T·N) · Eᵀ X̃, then
/// <see cref="RoundingLayer.Backward"/>. Deterministic for a seed (batches drawn by a seeded generator; the matrix products split
/// work by output panel, so sums run in a fixed order).
/// </summary>
public static class RoundingTrainer
{
    /// <summary>Bytes the training of an N×K layer holds besides the caches: parameters, gradient, moments, the layer's buffers and
    /// one batch of <paramref name="batchTokens"/> rows.</summary>
    public static long EstimateBytes(int n, int k, int groups, RoundingSettings s, long batchTokens)
    {
        long p = n * (long)groups + n + k + (s.Method == RoundingMethod.FlexRound ? (long)n * k : (long)s.RankFor(n, k) * (n + k));
        // The float weight (one copy), its gradient, and the layer's own arrays.
        long layer = 8L * n * k + RoundingLayer.WorkBytes(n, k, s.Method);
        long batch = batchTokens * (k * 3L + n * 3L) * 4;
        return 8 * p + Adam.EstimateStateBytes(p, s.Fp8Moments, s.MomentGroup) + layer + batch;
    }

    /// <summary>Learns the rounding of <paramref name="w"/> ([N, K]) starting from <paramref name="rtn"/>.</summary>
    public static RoundingOutcome Train(ReadOnlySpan<float> w, QuantizedWeight rtn, IReadOnlyList<StoredMatrix> inputs,
        InputQuantizer? inputQuantizer, RoundingSettings s)
    {
        if (inputs.Count == 0) throw new ArgumentException("no cached inputs");
        if (inputs.Any(x => x.Columns != rtn.K)) throw new ArgumentException("cached inputs do not have K columns");
        var clock = Stopwatch.StartNew();
        var wArr = w.ToArray();
        var layer = new RoundingLayer(wArr, rtn, s.Method, s.RankFor(rtn.N, rtn.K), s.Seed);
        var adam = new Adam(layer.ParameterCount, s.LearningRate, s.Iterations, s.Fp8Moments, s.ExpandMoments, s.MomentGroup);
        var grad = new float[layer.ParameterCount];
        var rng = new Random(s.Seed);
        var gemm = new GemmMeter();
        int done = 0;
        var rtnW = rtn.Dequantize();
        var split = s.SplitOf(inputs.Count);
        // Training rows and selection rows: with nothing held out both are every cached row, measured once.
        IReadOnlyList<StoredMatrix> train = split.Active ? [.. split.Train.Select(i => inputs[i])] : inputs;
        IReadOnlyList<StoredMatrix>? held = split.Active ? [.. split.HeldOut.Select(i => inputs[i])] : null;
        (double Select, double Train) Errors(float[] what)
        {
            double t = FullError(train, inputQuantizer, wArr, what, rtn.N, rtn.K, gemm);
            return (held is null ? t : FullError(held, inputQuantizer, wArr, what, rtn.N, rtn.K, gemm), t);
        }
        var (rtnErr, trainRtnErr) = Errors(rtnW);
        // The parameters with the lowest error on the selection rows, checked at the end of each window (the straight-through
        // gradient is biased and can drift once the easy roundings are fixed, and a few rows can be overfitted; the snapshot keeps
        // the best point seen).
        var tracker = new WindowTracker(s, split, rtnErr, trainRtnErr);
        float[]? bestTheta = null;
        var order = (int[])split.Train.Clone();
        int cursor = order.Length;
        for (int it = 0; it < s.Iterations; it++)
        {
            // Training sequences without replacement within an epoch, reshuffled (seeded) at each epoch's start.
            var batch = new List<StoredMatrix>();
            for (int b = 0; b < Math.Min(s.BatchSamples, order.Length); b++)
            {
                if (cursor == order.Length) { rng.Shuffle(order); cursor = 0; }
                batch.Add(inputs[order[cursor++]]);
            }
            var (x, xq, t) = Gather(batch, rtn.K, inputQuantizer);
            layer.Forward();
            var gw = new float[rtn.N * rtn.K];
            Loss(x, xq, t, rtn.K, wArr, layer.Weights, rtn.N, gw, gemm);
            layer.Backward(gw, grad);
            adam.Step(layer.Theta, grad);
            done = it + 1;
            if (tracker.EndsWindow(done))
            {
                layer.Forward();
                var (err, trainErr) = Errors(layer.Weights);
                if (tracker.Record(done, err, trainErr)) bestTheta = (float[])layer.Theta.Clone();
                if (tracker.Stopped) break;
            }
        }
        bool keep = bestTheta is null;
        if (!keep)
        {
            bestTheta!.CopyTo(layer.Theta, 0);
            layer.Forward();
        }
        var result = keep ? rtn : layer.Result(rtn);
        return new RoundingOutcome(result, rtnErr, tracker.Best, keep && done > 0, done, tracker.Stopped, clock.Elapsed.TotalSeconds,
            adam.StateBytes, tracker.Curve, gemm.Gflops, tracker.Selection());
    }

    /// <summary>Mean squared output error of one batch and (when <paramref name="gw"/> is given) its gradient with respect to Ŵ.</summary>
    public static double Loss(float[] x, float[]? xq, int t, int k, float[] w, float[] what, int n, float[]? gw, GemmMeter? meter = null)
    {
        meter ??= new GemmMeter();
        var e = new float[t * n];
        if (xq is null)
        {
            var d = new float[n * k];
            for (int i = 0; i < d.Length; i++) d[i] = what[i] - w[i];
            meter.Time(() => Gemm.Nt(x, d, e, t, k, n), (long)t * k * n);
        }
        else
        {
            var target = new float[t * n];
            meter.Time(() => Gemm.Nt(xq, what, e, t, k, n), (long)t * k * n);
            meter.Time(() => Gemm.Nt(x, w, target, t, k, n), (long)t * k * n);
            for (int i = 0; i < e.Length; i++) e[i] -= target[i];
        }
        double loss = 0;
        foreach (float v in e) loss += (double)v * v;
        double norm = 1.0 / ((double)t * n);
        if (gw is not null)
        {
            meter.Time(() => Gemm.Tn(e, xq ?? x, gw, n, t, k), (long)t * k * n);
            float f = (float)(2 * norm);
            for (int i = 0; i < gw.Length; i++) gw[i] *= f;
        }
        return loss * norm;
    }

    /// <summary>‖X̃Ŵᵀ − XWᵀ‖² / ‖XWᵀ‖² over every cached row.</summary>
    public static double FullError(IReadOnlyList<StoredMatrix> inputs, InputQuantizer? iq, float[] w, float[] what, int n, int k,
        GemmMeter? meter = null)
    {
        meter ??= new GemmMeter();
        double err = 0, norm = 0;
        foreach (var m in inputs)
        {
            var (x, xq, t) = Gather([m], k, iq);
            err += Loss(x, xq, t, k, w, what, n, null, meter) * t * n;
            var y = new float[t * n];
            meter.Time(() => Gemm.Nt(x, w, y, t, k, n), (long)t * k * n);
            foreach (float v in y) norm += (double)v * v;
        }
        return norm > 0 ? err / norm : err;
    }

    private static (float[] X, float[]? Xq, int T) Gather(List<StoredMatrix> batch, int k, InputQuantizer? iq)
    {
        int t = batch.Sum(m => m.Rows);
        var x = new float[t * k];
        int row = 0;
        foreach (var m in batch)
        {
            m.Read(0, m.Rows, x.AsSpan(row * k, m.Rows * k));
            row += m.Rows;
        }
        if (iq is null) return (x, null, t);
        var xq = new float[x.Length];
        iq.Apply(x, xq);
        return (x, xq, t);
    }
}

/// <summary>Counts matrix-product work and time (for the GEMM throughput in the log).</summary>
public sealed class GemmMeter
{
    private long _flops;
    private long _ticks;

    /// <summary>Runs <paramref name="gemm"/> of m·n·k multiply-adds and counts it.</summary>
    public void Time(Action gemm, long multiplyAdds)
    {
        long start = Stopwatch.GetTimestamp();
        gemm();
        _ticks += Stopwatch.GetTimestamp() - start;
        _flops += 2 * multiplyAdds;
    }

    /// <summary>GFLOP/s so far (0 before any product).</summary>
    public double Gflops => _ticks == 0 ? 0 : _flops / (_ticks / (double)Stopwatch.Frequency) / 1e9;

    /// <summary>Seconds spent in products.</summary>
    public double Seconds => _ticks / (double)Stopwatch.Frequency;
}
