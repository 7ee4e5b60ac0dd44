using System.Diagnostics;
using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>What the weights pass needs to learn roundings (FlexRound / LRQ), from its options (Block: scope block, each decoder
/// block's output reconstructed rather than each layer's).</summary>
public sealed record LearnedRoundingConfig(RoundingMethod Method, int Iterations, double LearningRate, int Rank, int Batch, int Seed,
    bool Fp8Cache, bool Fp8Optimizer, int Patience, bool Block = false, double Holdout = RoundingSettings.DefaultHoldout)
{
    /// <summary>The configuration of <paramref name="o"/>, or null for the other methods.</summary>
    public static LearnedRoundingConfig? Of(WeightsOptions o) => o.Method switch
    {
        "flexround" => new(RoundingMethod.FlexRound, o.Iterations, o.LearningRate, o.Rank, o.Batch, o.Seed, o.Fp8Cache, o.Fp8Optimizer,
            o.Patience, o.Scope == "block", o.Holdout),
        "lrq" => new(RoundingMethod.Lrq, o.Iterations, o.LearningRate, o.Rank, o.Batch, o.Seed, o.Fp8Cache, o.Fp8Optimizer, o.Patience,
            o.Scope == "block", o.Holdout),
        _ => null,
    };

    /// <summary>The trainers' settings (the learning rate for quantized inputs or not; the caller sets each layer's or block's
    /// seed).</summary>
    public RoundingSettings Settings(bool quantizedInputs) => new()
    {
        Method = Method, Iterations = Iterations, LearningRate = RateFor(quantizedInputs), Rank = Rank, BatchSamples = Batch,
        Seed = Seed, Fp8Moments = Fp8Optimizer, Patience = Patience, Holdout = Holdout,
    };

    /// <summary>What the hold-out gives with <paramref name="sequences"/> calibration sequences, for the pass's first log line.</summary>
    public string HoldoutLine(int sequences)
    {
        var split = HoldoutSplit.Of(sequences, Holdout, Seed);
        return split.Active
            ? $"holdout {Holdout.ToString("0.###", CultureInfo.InvariantCulture)}: {split.Describe()} (the early stop, the snapshot " +
                "and RTN-or-learned are chosen by their error; batches from the others)"
            : $"{split.Describe()} (every row trains and chooses the snapshot)";
    }

    /// <summary>The reference scripts' learning rates when none is given: FlexRound 3e-3; LRQ 9e-4 weight-only, 5e-4 with
    /// quantized activations.</summary>
    public double RateFor(bool quantizedInputs) => LearningRate > 0 ? LearningRate
        : Method == RoundingMethod.FlexRound ? 3e-3 : quantizedInputs ? 5e-4 : 9e-4;
}

/// <summary>
/// FlexRound / LRQ in the weights pass, layer-wise: each linear layer's calibration inputs are cached (COAT: float8 e4m3 with
/// one scale per tensor, i.e. per calibration sequence), then its rounding is learned against ‖X̃Ŵᵀ − XWᵀ‖², X̃ being the input
/// quantized as the runtime will (static integer activations) or X itself. Layers are independent (the float model's inputs).
/// </summary>
internal static class LearnedRoundingStep
{
    public static Dictionary<string, QuantizedWeight> Run(PassContext ctx, IReadOnlyList<LinearLayer> layers,
        LearnedRoundingConfig c, string pass)
    {
        string tag = $"{pass} ({MethodName(c)})";
        var result = new Dictionary<string, QuantizedWeight>(StringComparer.Ordinal);
        if (layers.Count == 0)
        {
            ctx.Notice($"{tag}: no layer with integer weights to learn (the plan quantizes {ctx.Plan.Layers.Count} layers otherwise)");
            return result;
        }
        if (ctx.CalibrationData is not { Count: > 0 })
            throw new Quantc.Onnx.BadInputException($"{tag} learns the rounding from calibration data: give --calib DATA");
        var inputs = layers.GroupBy(l => l.Input.Name).ToDictionary(g => g.Key, g => (int)g.First().InFeatures, StringComparer.Ordinal);
        long tokens = ctx.CalibrationData.Sum(RowsOf), maxSeq = ctx.CalibrationData.Max(RowsOf);
        long cacheF32 = 4 * tokens * inputs.Values.Sum(k => (long)k);
        long cacheBytes = c.Fp8Cache ? cacheF32 / 4 + 4L * ctx.CalibrationData.Count * inputs.Count : cacheF32;
        long train = layers.Max(l => RoundingTrainer.EstimateBytes((int)l.OutFeatures, (int)l.InFeatures,
            GroupsOf(ctx.Plan[l.Name], (int)l.InFeatures), c.Settings(false), maxSeq * c.Batch));
        long weights = layers.Sum(l => l.InFeatures * l.OutFeatures);
        ctx.Log.Add($"{tag}: memory estimate ≤ {Mib(cacheBytes + train)} MiB = input caches ≤ {Mib(cacheBytes)} MiB (a model run in " +
            $"segments holds one segment's at a time) " +
            $"({(c.Fp8Cache ? $"FP8 e4m3 per tensor; float32 would take {Mib(cacheF32)} MiB" : "float32")}, {inputs.Count} inputs × " +
            $"{tokens} tokens) + training ≤ {Mib(train)} MiB ({(c.Fp8Optimizer ? "FP8 Adam moments" : "float32 Adam moments")}); " +
            $"{layers.Count} layers, {weights / 1e6:0.###} M weights, {c.Iterations} steps each, batch {c.Batch} sequences; " +
            c.HoldoutLine(ctx.CalibrationData.Count));

        // Each input's cache is learned from as soon as the calibration has seen all of its data (the end of its segment on a model run
        // in segments), then dropped; each layer's rounded weight goes into its plan at once (spilled on a large model). So one
        // segment's caches and one layer's training are held at a time, not every layer's (1b lrq-w8a8: 3.4 GB before).
        var caches = inputs.Keys.ToDictionary(k => k, _ => new List<StoredMatrix>(), StringComparer.Ordinal);
        var byInput = layers.GroupBy(l => l.Input.Name).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var seedOf = layers.Select((l, i) => (l.Name, i)).ToDictionary(x => x.Name, x => c.Seed + x.i, StringComparer.Ordinal);
        var learnedInputs = new HashSet<string>(StringComparer.Ordinal);
        var clock = Stopwatch.StartNew();
        double gflops = 0, gemmLayers = 0, rtnSum = 0, learnedSum = 0;
        int kept = 0;
        long maxState = 0, heldBytes = 0;
        void Learn(IReadOnlyList<string> names)
        {
            heldBytes = Math.Max(heldBytes, caches.Values.Sum(list => { lock (list) return list.Sum(m => m.Bytes); }));
            foreach (var name in names)
            {
                if (!caches.TryGetValue(name, out var cache) || !learnedInputs.Add(name)) continue;
                foreach (var l in byInput[name])
                {
                    var plan = ctx.Plan[l.Name];
                    int k = (int)l.InFeatures, n = (int)l.OutFeatures;
                    var nk = ReadNk(l);
                    var rtn = RtnOf(plan, nk, n, k);
                    var iq = InputQuantizerOf(plan);
                    var s = c.Settings(iq is not null) with { Seed = seedOf[l.Name] };
                    var o2 = RoundingTrainer.Train(nk, rtn, cache, iq, s);
                    plan.QuantizedWeight = o2.Weight;
                    result[l.Name] = plan.QuantizedWeight!;
                    gflops += o2.GemmGflops;
                    gemmLayers++;
                    rtnSum += o2.RtnError;
                    learnedSum += o2.LearnedError;
                    maxState = Math.Max(maxState, o2.StateBytes);
                    if (o2.KeptRtn) kept++;
                    string what = Describe("output", o2.RtnError, o2.LearnedError, o2.KeptRtn, o2.Curve, o2.Selection);
                    plan.Reasons.Add($"{tag}: {what}, {o2.Iterations} steps{(o2.StoppedEarly ? " (early stop)" : "")}" +
                        $"{(iq is null ? "" : ", inputs quantized as at run time")}");
                    ctx.Log.Add($"{tag}: {l.Name} [{n}×{k}] {what}; {o2.Iterations} steps{(o2.StoppedEarly ? " (early stop)" : "")} " +
                        $"in {o2.Seconds:0.00} s; {Curves(o2.Curve, o2.Selection)}; GEMM {o2.GemmGflops:0.0} GFLOP/s");
                    ctx.ReleaseLayerCopies();
                }
                lock (cache) cache.Clear();
            }
            // This segment's caches and training arrays are garbage now; on a model that spills they go before the next segment's come.
            ctx.ReleaseLayerCopies(now: true);
            Quantc.Core.Diagnostics.MemoryTrace.Mark($"{pass} learned {learnedInputs.Count}/{caches.Count} inputs");
        }
        ctx.Calibrate(inputs.Keys.ToList(), pass, (name, data, channels) =>
        {
            var m = c.Fp8Cache ? StoredMatrix.PerTensor(data, channels) : StoredMatrix.Float32(data, channels);
            lock (caches[name]) caches[name].Add(m);
        }, Learn);
        Learn([.. inputs.Keys.Where(k => !learnedInputs.Contains(k))]);   // inputs the run never declared complete (none expected)
        double secs = clock.Elapsed.TotalSeconds;
        ctx.Log.Add($"{tag}: {layers.Count} layers in {secs:0.0} s ({secs / layers.Count:0.00} s per layer, " +
            $"{secs / (weights / 1e6):0.0} s per 1 M weights); mean output error (on the rows that chose each layer's result) " +
            $"{rtnSum / layers.Count:0.###e0} (RTN) → " +
            $"{learnedSum / layers.Count:0.###e0}; " +
            $"{kept} layers kept RTN; caches held ≤ {Mib(heldBytes)} MiB at once, Adam moments ≤ {Mib(maxState)} MiB; GEMM mean " +
            $"{gflops / Math.Max(gemmLayers, 1):0.0} GFLOP/s; process peak working set " +
            $"{Mib(Process.GetCurrentProcess().PeakWorkingSet64)} MiB");
        return result;
    }

    /// <summary>Activation rows one calibration sample gives a layer: its token count (the token input's size), else the largest
    /// input's size without its last (channel) dimension.</summary>
    private static long RowsOf(Quantc.Core.Calibration.CalibrationSample s)
    {
        static long Count(long[] shape, int drop) => shape.Take(shape.Length - drop).Aggregate(1L, (a, b) => a * Math.Max(b, 1));
        foreach (var (name, v) in s.Inputs)
            if (Quantc.Core.Calibration.CalibrationInputs.IsTokenInput(name)) return Count(v.Shape, 0);
        return s.Inputs.Values.Select(v => Count(v.Shape, v.Shape.Length > 0 ? 1 : 0)).DefaultIfEmpty(1).Max();
    }

    /// <summary>"flexround" or "lrq".</summary>
    internal static string MethodName(LearnedRoundingConfig c) => c.Method == RoundingMethod.Lrq ? "lrq" : "flexround";

    /// <summary>The layer's float weight as [N, K] (row n = output channel n).</summary>
    internal static float[] ReadNk(LinearLayer l)
    {
        var kn = Weights.Read(l);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        var nk = new float[kn.Length];
        for (int j = 0; j < k; j++) for (int o = 0; o < n; o++) nk[o * k + j] = kn[j * n + o];
        return nk;
    }

    /// <summary>Round-to-nearest of <paramref name="nk"/> ([N, K]) on the plan's grid, group and symmetry.</summary>
    internal static QuantizedWeight RtnOf(LayerPlan plan, float[] nk, int n, int k) => plan.WeightSymmetric
        ? WeightQuantizer.Rtn(nk, n, k, plan.WeightFormat.Grid!, plan.GroupSize)
        : WeightQuantizer.RtnAsymmetric(nk, n, k, plan.WeightFormat.Grid!, plan.GroupSize);

    private static int GroupsOf(LayerPlan p, int k) => p.GroupSize > 0 ? k / p.GroupSize : 1;

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>What a trainer kept and why, for the plan's reasons and the log: the rows whose error chose the result (held-out
    /// sequences, or every cached row and why), that error at RTN and at the kept step, and the training rows' error at both.
    /// <paramref name="error"/> names the error ("output", "block output").</summary>
    internal static string Describe(string error, double rtnError, double learnedError, bool keptRtn, IReadOnlyList<double> curve,
        Selection sel)
    {
        string rows = sel.Split.Active ? $"held-out {error} error ({sel.Split.Describe()})"
            : $"{error} error over every cached row ({sel.Split.Describe()})";
        string train = sel.Split.Active
            ? $"; training rows {E(sel.TrainRtnError)} (RTN) → {E(sel.TrainLearnedError)} at step {sel.BestStep}" : "";
        if (keptRtn)
            return $"kept round-to-nearest: {rows} {E(rtnError)} (RTN), lowest learned {E(curve.DefaultIfEmpty(rtnError).Min())} " +
                $"not below it{(sel.Split.Active ? $"; training rows' lowest {E(sel.TrainCurve.DefaultIfEmpty(sel.TrainRtnError).Min())}" +
                $" against RTN's {E(sel.TrainRtnError)}" : "")}";
        return $"{rows} {E(rtnError)} (RTN) → {E(learnedError)} ({learnedError / rtnError:0.###}×) at step {sel.BestStep}, the " +
            $"snapshot kept{train}";
    }

    /// <summary>The error by window on the selection rows and, with a hold-out, on the training rows (five points each).</summary>
    internal static string Curves(IReadOnlyList<double> curve, Selection sel)
    {
        static string Join(IReadOnlyList<double> c) => string.Join(" → ", Sample(c).Select(E));
        return sel.Split.Active ? $"held-out error by window {Join(curve)}; training rows' {Join(sel.TrainCurve)}"
            : $"error by window {Join(curve)}";
    }

    private static string E(double v) => v.ToString("0.###e0", CultureInfo.InvariantCulture);

    internal static IEnumerable<double> Sample(IReadOnlyList<double> curve)
    {
        if (curve.Count <= 5) return curve;
        return Enumerable.Range(0, 5).Select(i => curve[(int)Math.Round(i * (curve.Count - 1) / 4.0)]);
    }

    /// <summary>The input's quantization as the lowering will emit it, for static integer activations (null otherwise: the loop then
    /// reconstructs from float inputs).</summary>
    internal static InputQuantizer? InputQuantizerOf(LayerPlan plan)
    {
        if (!plan.ActivationFormat.IsInteger || plan.ActivationMode != ActivationMode.Static || plan.ActivationRange is not { } range)
            return null;
        var grid = plan.ActivationFormat.Grid!;
        if (plan.ActivationFormat == NumberFormat.UInt8)
        {
            float lo = Math.Min(range.Lo, 0), hi = Math.Max(range.Hi, 0);
            float scale = Math.Max((hi - lo) / 255f, 1e-12f);
            return new InputQuantizer(scale, (int)MathF.Round(-lo / scale), (int)grid.Min, (int)grid.Max);
        }
        int levels = plan.ActivationFormat.SymmetricLevels;
        float s = Math.Max(Math.Max(Math.Abs(range.Lo), Math.Abs(range.Hi)) / levels, 1e-12f);
        return new InputQuantizer(s, 0, (int)grid.Min, (int)grid.Max);
    }
}
