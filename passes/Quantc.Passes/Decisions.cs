using System.Globalization;
using System.Text.RegularExpressions;
using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// Quantize: the base precision decision for every linear layer — weight format, granularity and
/// group size; activation format and mode. Layers matching <c>exclude</c> patterns (regular
/// expressions on layer names; lm_head by default) stay in float. Layers matching <c>dynamic</c>
/// patterns get per-token dynamic activations whatever <c>mode</c> says (OutlierTune quantizes the
/// inputs of o_proj / fc2 this way); <c>symmetric: false</c> chooses min-max weights with zero points.
/// <c>reduce_range</c> (auto, true, false) puts int8 weights that meet static 8-bit activations on a 7-bit
/// grid ("int7", stored as int8): ONNX Runtime's U8S8 kernel on x86 CPUs without VNNI multiplies with
/// vpmaddubsw, whose int16 pair sums saturate for full-range weights (255·127·2 > 32767), and there it also
/// turns S8S8 QDQ into U8S8 — the same reason ONNX Runtime's own quantizer has <c>reduce_range</c>.
/// <c>auto</c> turns it on when the compiling machine is such a CPU (the model is verified here, and is
/// meant to run on the same kind of machine). Per-token dynamic 8-bit layers run on the same U8S8 kernel
/// (lower_qdq); <c>true</c> puts them on the 7-bit grid too, <c>auto</c> keeps their int8 weights (their rows sit
/// around the zero point, where the pair sums rarely saturate).
/// </summary>
public sealed class QuantizePass(NumberFormat weights, Granularity granularity, int groupSize, NumberFormat activations,
    ActivationMode mode,
    IReadOnlyList<string> exclude, IReadOnlyList<string> dynamic, bool symmetric, string reduceRange) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<QuantizeOptions>("quantize", PassKind.Decision,
        "base precision of every linear layer",
        o => new QuantizePass(NumberFormat.Parse(o.Weights), PlanNames.ParseGranularity(o.Granularity), o.GroupSize,
            NumberFormat.Parse(o.Activations),
            PlanNames.ParseMode(o.Mode), o.Exclude, o.Dynamic, o.Symmetric, o.ReduceRange))
        with { Contract = new([Facts.FloatLayers], [Facts.Formats], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        if (activations == NumberFormat.Fp8 && (mode == ActivationMode.Dynamic || dynamic.Count > 0))
            throw new Quantc.Onnx.BadInputException("quantize: fp8 activations are static per-tensor (float8 e4m3fn); use mode: static " +
                "without dynamic patterns");
        bool u8s8 = weights == NumberFormat.Int8 && (activations == NumberFormat.UInt8 || activations == NumberFormat.Int8);
        bool reduce = u8s8 && reduceRange switch
        {
            "true" => true,
            "auto" => !CpuFeatures.HasInt8DotProduct,
            _ => false,
        };
        if (u8s8 && reduceRange == "auto")
            ctx.Log.Add(reduce
                ? $"quantize: reduce_range auto → on: this CPU ({CpuFeatures.Description}) has no int8 dot-product instructions (VNNI), " +
                    $"and ONNX Runtime's U8S8 kernel would saturate with full-range int8 weights; weights on a 7-bit grid"
                : $"quantize: reduce_range auto → off: this CPU ({CpuFeatures.Description}) has int8 dot-product instructions");
        foreach (var l in ctx.Map.Linears)
        {
            var plan = ctx.Plan[l.Name];
            if (exclude.FirstOrDefault(p => Regex.IsMatch(l.Name, p)) is { } excluded)
            {
                plan.Reasons.Add($"kept float: matches exclude pattern {excluded}");
                continue;
            }
            var layerGranularity = granularity;
            int layerGroup = groupSize;
            if (granularity == Granularity.PerGroup && weights != NumberFormat.Fp8 && l.InFeatures % groupSize != 0)
            {
                int k = (int)l.InFeatures;
                int chosen = GroupSizeFor(k, groupSize);
                if (chosen == 0)
                {
                    layerGranularity = Granularity.PerChannel;
                    layerGroup = 0;
                    plan.Reasons.Add($"quantize: per_channel instead of group size {groupSize}: in_features {k} has no divisor " +
                        $"≤ {groupSize} that is a multiple of 8");
                }
                else
                {
                    layerGroup = chosen;
                    plan.Reasons.Add($"quantize: group size {chosen} instead of {groupSize}: in_features {k} is not a multiple " +
                        $"of {groupSize}");
                }
            }
            // float8 weights take one per-tensor scale (the range of e4m3fn covers a tensor's spread).
            plan.WeightGranularity = weights == NumberFormat.Fp8 ? Granularity.PerTensor : layerGranularity;
            plan.GroupSize = layerGranularity == Granularity.PerGroup && weights != NumberFormat.Fp8 ? layerGroup : 0;
            plan.WeightSymmetric = symmetric;
            plan.ActivationFormat = activations;
            plan.ActivationMode = dynamic.Any(p => Regex.IsMatch(l.Name, p)) ? ActivationMode.Dynamic : mode;
            // Per-token dynamic rows sit around the zero point 128 (most |q| small), so ONNX Runtime's int16 pair sums
            // rarely saturate with full-range weights: auto keeps their int8 weights (measured more accurate than int7:
            // bench/RESULTS.md), true puts them on the 7-bit grid too (exact on any CPU).
            bool reduceHere = reduce && (plan.ActivationMode == ActivationMode.Static || reduceRange == "true");
            var weightFormat = reduceHere ? NumberFormat.Int7 : weights;
            plan.WeightFormat = weightFormat;
            if (l.Conv is not null && !ConvQuant.Adjust(l, plan)) continue;
            string modeName = plan.ActivationMode.Name();
            string reduced = reduceHere
                ? $" (reduce_range: {modeName} 8-bit activations on ONNX Runtime's U8S8 kernel, a CPU without VNNI)" : "";
            string group = plan.GroupSize > 0 ? $" {plan.GroupSize}" : "";
            string asym = symmetric ? "" : ", asymmetric";
            plan.Reasons.Add($"quantize: {weightFormat} weights{reduced} ({layerGranularity.Name()}{group}{asym}), " +
                $"{activations} activations ({modeName})");
        }
        ConvQuant.Summarize(ctx);
        if (AlreadyQuantized(ctx.Model.Graph) is { } done)
            ctx.Notice($"quantize: the model is already quantized — {done} — and those layers stay as they are; " +
                $"{ctx.Map.Linears.Count} float linear layer(s) found for this recipe" +
                (ctx.Map.Linears.Count == 0 ? "" : $" ({string.Join(", ", ctx.Map.Linears.Take(3).Select(l => l.Name))}" +
                    $"{(ctx.Map.Linears.Count > 3 ? ", …" : "")})"));
    }

    /// <summary>Op types that hold a quantized linear layer (a weight stored in fewer bits, not a float initializer).</summary>
    private static readonly (string Domain, string Op)[] QuantizedLinearOps =
    [
        (CustomOps.Domain, "MatMulInt4Int8"), (CustomOps.Domain, "HadamardMatMulInt4Int8"), (CustomOps.Domain, "SwiGluMatMulInt4Int8"),
        (CustomOps.Domain, "MatMulInt8"), (CustomOps.Domain, "MatMulInt4Fp8"),
        ("com.microsoft", "MatMulNBits"), ("com.microsoft", "MatMulIntegerToFloat"), ("com.microsoft", "DynamicQuantizeMatMul"),
        ("", "MatMulInteger"), ("", "QLinearMatMul"), ("", "QLinearConv"), ("", "ConvInteger"),
    ];

    /// <summary>"16 ai.quantc.MatMulInt4Int8, 8 com.microsoft.MatMulNBits …" where the graph already has quantized linear layers
    /// (those ops, or a DequantizeLinear of a constant feeding a MatMul / Gemm / Conv), else null.</summary>
    internal static string? AlreadyQuantized(Quantc.Ir.Graph g)
    {
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in g.AllNodes())
        {
            string? what = null;
            foreach (var (domain, op) in QuantizedLinearOps)
                if (n.Is(op, domain)) { what = domain.Length == 0 ? op : $"{domain}.{op}"; break; }
            if (what is null && n.Is("DequantizeLinear") && n.Inputs.Count > 0 && n.Inputs[0]?.Initializer is not null
                && n.Output.Uses.Any(u => u.Node.Is("MatMul") || u.Node.Is("Gemm") || u.Node.Is("Conv")))
                what = "DequantizeLinear weights (QDQ)";
            if (what is not null) counts[what] = counts.GetValueOrDefault(what) + 1;
        }
        return counts.Count == 0 ? null : string.Join(", ", counts.Select(kv => $"{kv.Value} {kv.Key}"));
    }

    /// <summary>
    /// The group size for K when K is not a multiple of <paramref name="requested"/>: the largest power of two ≥ 16 that
    /// divides K and is at most the requested size (ONNX Runtime's MatMulNBits and the w4a8 kernel take those), else the
    /// largest multiple of 8 that does; 0 when there is none (the layer goes per-channel: groups of 1, 2 or 4 weights
    /// would cost more in scales than int8 weights).
    /// </summary>
    public static int GroupSizeFor(int k, int requested)
    {
        if (k % requested == 0) return requested;
        for (int g = 1 << 30; g >= 16; g >>= 1)
            if (g <= requested && k % g == 0) return g;
        for (int g = requested - requested % 8; g >= 8; g -= 8)
            if (k % g == 0) return g;
        return 0;
    }
}

/// <summary>
/// Spike-aware mixed precision: from per-token calibration statistics of each projection's input, the
/// layers whose inputs carry activation spikes (largest token absmax over the median token absmax
/// above <c>threshold</c>) keep fp16 weights and float activations; at most <c>budget</c> (a share
/// of the quantized layers) are kept, largest spikes first. <c>keep</c> / <c>force</c> name patterns
/// that always stay high / always quantize (manual overrides win).
/// </summary>
public sealed class SpikeMixedPass(double threshold, double budget, NumberFormat highPrecision, IReadOnlyList<string> keep,
    IReadOnlyList<string> force) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<SpikeMixedOptions>("spike_mixed", PassKind.Decision,
        "keep the projections whose inputs carry activation spikes in high precision",
        o => new SpikeMixedPass(o.Threshold, o.Budget, NumberFormat.Parse(o.Precision), o.Keep, o.Force))
        with { Contract = new([Facts.Formats, Facts.FloatLayers], [], [Facts.RoundedWeights, Facts.Ranges]) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = ctx.Map.Linears.Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.ActivationFormat != NumberFormat.Fp32).ToList();
        if (layers.Count == 0) { ctx.Notice("spike_mixed: no layer kept: no layer has quantized activations"); return; }
        var stats = ctx.Calibrate(layers.Select(l => l.Input.Name).Distinct().ToList(), Name);
        int maxKept = (int)Math.Floor(budget * layers.Count);
        var ranked = layers.Select(l => (Layer: l, Ratio: (double)stats[l.Input.Name].SpikeRatio)).OrderByDescending(x => x.Ratio).ToList();
        int kept = 0;
        bool anyManual = false;
        foreach (var (l, ratio) in ranked)
        {
            var plan = ctx.Plan[l.Name];
            string r = ratio.ToString("0.0", CultureInfo.InvariantCulture);
            bool forced = force.Any(p => Regex.IsMatch(l.Name, p));
            bool manual = keep.Any(p => Regex.IsMatch(l.Name, p));
            if (forced) { plan.Reasons.Add($"spike_mixed: quantized (forced by override; input spike ratio {r})"); continue; }
            if (manual || (ratio > threshold && kept < maxKept))
            {
                plan.WeightFormat = highPrecision;
                plan.WeightGranularity = Granularity.PerTensor;
                plan.GroupSize = 0;
                // fp8: float8 e4m3fn weights and static activations, each with one per-tensor scale (its range holds the spikes).
                plan.ActivationFormat = highPrecision == NumberFormat.Fp8 ? NumberFormat.Fp8 : NumberFormat.Fp32;
                plan.ActivationMode = ActivationMode.Static;
                plan.Reasons.Add(manual ? $"spike_mixed: kept {highPrecision} (override)"
                    : $"spike_mixed: kept {highPrecision}: input spike ratio {r} > {threshold.ToString(CultureInfo.InvariantCulture)}");
                ctx.Log.Add($"spike_mixed: {l.Name} kept {highPrecision} (spike ratio {r})");
                if (!manual) kept++;
                else anyManual = true;
            }
            else if (ratio > threshold)
                plan.Reasons.Add($"spike_mixed: quantized despite spike ratio {r}: budget of {maxKept} layers used");
        }
        if (kept == 0 && !anyManual)
        {
            var (top, ratio) = ranked[0];
            string t = threshold.ToString(CultureInfo.InvariantCulture), r = ratio.ToString("0.0", CultureInfo.InvariantCulture);
            ctx.Notice(ratio > threshold
                ? $"spike_mixed: no layer kept: largest input spike ratio {r} > threshold {t} ({top.Name}), but the budget " +
                    $"allows {maxKept} of {layers.Count} layers"
                : $"spike_mixed: no layer kept: largest input spike ratio {r} ≤ threshold {t} ({top.Name})");
        }
    }
}

/// <summary>Ranges: static activation ranges for every layer with static quantized activations, from calibration statistics with the chosen
/// selector.</summary>
public sealed class RangesPass(RangeMethod method, double percentile) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<RangesOptions>("ranges", PassKind.Decision,
        "static activation ranges from calibration statistics",
        o => new RangesPass(o.Method switch
        {
            "percentile" => RangeMethod.Percentile,
            "entropy" => RangeMethod.Entropy,
            "mse" => RangeMethod.Mse,
            _ => RangeMethod.MinMax,
        }, o.Percentile))
        with { Contract = new([Facts.Formats, Facts.FloatLayers], [Facts.Ranges], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = ctx.Map.Linears
            .Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.ActivationFormat != NumberFormat.Fp32 &&
                p.ActivationMode == ActivationMode.Static).ToList();
        if (layers.Count == 0) return;
        var convOutputs = ConvQuant.StaticConvs(ctx).Select(l => l.Output.Name);
        var stats = ctx.Calibrate(layers.Select(l => l.Input.Name).Concat(convOutputs).Distinct().ToList(), Name);
        string methodName = method == RangeMethod.Percentile ? $"percentile {percentile.ToString(CultureInfo.InvariantCulture)}"
            : method.ToString().ToLowerInvariant();
        ConvQuant.RecordOutputRanges(ctx, stats, method, percentile, methodName);
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            // Ranges are scored on the format's symmetric integer grid; float8 (no integer grid) on int8's.
            int levels = plan.ActivationFormat.IsInteger ? plan.ActivationFormat.SymmetricLevels : NumberFormat.Int8.SymmetricLevels;
            var range = RangeSelector.Select(stats[l.Input.Name], method, percentile, levels);
            plan.ActivationRange = range;
            plan.RangeMethod = methodName;
        }
    }
}

/// <summary>Weights: rounds every quantized layer's weight with RTN or GPTQ (GPTQ accumulates each layer's input Hessian over the
/// calibration data).</summary>
public sealed class WeightsPass(string method, double damp, LearnedRoundingConfig? learned = null) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<WeightsOptions>("weights", PassKind.Decision,
        "round the weights",
        o => new WeightsPass(o.Method, o.Damp, LearnedRoundingConfig.Of(o)))
        with { Contract = new([Facts.Formats, Facts.FloatLayers], [Facts.RoundedWeights], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = ctx.Map.Linears
            .Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.WeightFormat.Grid is not null).ToList();
        bool gptq = method == "gptq";
        if (gptq && layers.FirstOrDefault(l => ctx.Plan[l.Name] is { WeightSymmetric: false } p && p.WeightFormat != NumberFormat.Fp8)
            is { } asymmetric)
            throw new Quantc.Onnx.BadInputException($"{asymmetric.Name}: GPTQ here is symmetric; use quantize symmetric: true or weights " +
                $"method: rtn");
        if (gptq) GptqRounding.Run(ctx, layers.Where(l => ctx.Plan[l.Name].WeightFormat.IsInteger && l.Conv is null).ToList(), damp, Name);
        // Learned rounding reconstructs x·W of a MatMul/Gemm input; a Conv (its input is not the im2col rows) keeps RTN.
        var toLearn = layers.Where(l => ctx.Plan[l.Name].WeightFormat.IsInteger && l.Conv is null).ToList();
        var learnedWeights = learned is null ? null
            : learned.Block ? BlockRoundingStep.Run(ctx, toLearn, learned, Name) : LearnedRoundingStep.Run(ctx, toLearn, learned, Name);
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            if (gptq && plan.WeightFormat.IsInteger && l.Conv is null) continue;      // rounded by GptqRounding
            // Block scope puts each block's learned weights into the plan as it goes (spilled on a large model): nothing to read.
            if (learnedWeights?.GetValueOrDefault(l.Name) is { } placed && ReferenceEquals(placed, plan.QuantizedWeight))
            {
                plan.WeightMethod = method;
                continue;
            }
            ctx.ReleaseLayerCopies();
            var nk = Weights.ReadNk(l);
            int k = (int)l.InFeatures, n = (int)l.OutFeatures;
            if (plan.WeightFormat == NumberFormat.Fp8)
            {
                // float8 rounds to its own grid (nearest even, saturating), per-tensor scale; GPTQ here is for integer grids.
                plan.QuantizedWeight = WeightQuantizer.Float8PerTensor(nk, n, k, QuantFormat.Float8E4M3Fn);
                plan.WeightMethod = "rtn";
                continue;
            }
            var format = plan.WeightFormat.Grid!;
            if (gptq && l.Conv is not null)
                plan.Reasons.Add("weights: RTN for a Conv (GPTQ's Hessian here is over the last axis of a MatMul's input)");
            plan.QuantizedWeight = learnedWeights?.GetValueOrDefault(l.Name) is { } learnedWeight ? learnedWeight
                : plan.WeightSymmetric ? WeightQuantizer.Rtn(nk, n, k, format, plan.GroupSize)
                : WeightQuantizer.RtnAsymmetric(nk, n, k, format, plan.GroupSize);
            if (learned is not null && l.Conv is not null)
                plan.Reasons.Add($"weights: RTN for a Conv ({method} reconstructs a MatMul's x·W, not a convolution)");
            plan.WeightMethod = (gptq || learned is not null) && l.Conv is not null ? "rtn" : method;
        }
    }
}

/// <summary>The options of <see cref="QuantizePass"/>.</summary>
public sealed record QuantizeOptions : PassOptions
{
    [Option("weight format", Choices = "int8|int6|int4|fp8|fp16|fp32")]
    public string Weights { get; init; } = "int8";

    [Option("one weight scale per output channel, or per group of group_size along K", Choices = "per_channel|per_group")]
    public string Granularity { get; init; } = "per_channel";

    [Option("weights per scale along K for per_group", Min = 1)]
    public int GroupSize { get; init; } = 128;

    [Option("activation format (fp32: weight-only; int6 and int4 are simulated: their grid on int8 storage and kernels)",
        Choices = "int8|uint8|int6|int4|fp8|fp32")]
    public string Activations { get; init; } = "int8";

    [Option("static (calibrated per-tensor range) or dynamic (per-token scale at run time)", Choices = "static|dynamic")]
    public string Mode { get; init; } = "static";

    [Option("layers left in float", Regex = true)]
    public IReadOnlyList<string> Exclude { get; init; } = ["^lm_head$"];

    [Option("layers whose activations are dynamic per token whatever the mode", Regex = true)]
    public IReadOnlyList<string> Dynamic { get; init; } = [];

    [Option("symmetric weights (zero point 0), or asymmetric min-max")]
    public bool Symmetric { get; init; } = true;

    [Option("7-bit weights for static uint8 activations (auto: when the compiling CPU has no VNNI, where ONNX Runtime's U8S8 kernel " +
        "saturates)",
        Choices = "auto|true|false")]
    public string ReduceRange { get; init; } = "auto";
}

/// <summary>The options of <see cref="SpikeMixedPass"/>.</summary>
public sealed record SpikeMixedOptions : PassOptions
{
    [Option("an input's spike ratio (largest token absmax over the median token absmax) above which its layer is kept", Min = 0,
        MinExclusive = true)]
    public double Threshold { get; init; } = 50;

    [Option("the largest share of the quantized layers kept", Min = 0, Max = 1)]
    public double Budget { get; init; } = 0.1;

    [Option("what kept layers become (fp8: float8 e4m3fn weights and static activations with per-tensor scales)",
        Choices = "fp16|fp8|fp32")]
    public string Precision { get; init; } = "fp16";

    [Option("layers always kept", Regex = true)]
    public IReadOnlyList<string> Keep { get; init; } = [];

    [Option("layers always quantized", Regex = true)]
    public IReadOnlyList<string> Force { get; init; } = [];
}

/// <summary>The options of <see cref="RangesPass"/>.</summary>
public sealed record RangesOptions : PassOptions
{
    [Option("range selection", Choices = "minmax|percentile|entropy|mse")]
    public string Method { get; init; } = "minmax";

    [Option("the percentile of |x| kept by the percentile method", Min = 0, MinExclusive = true, Max = 100)]
    public double Percentile { get; init; } = 99.99;
}

/// <summary>The options of <see cref="WeightsPass"/>.</summary>
public sealed record WeightsOptions : PassOptions
{
    [Option("rounding: round to nearest, GPTQ (Hessian-aware), or FlexRound / LRQ (learned by layer-wise reconstruction); all but rtn " +
        "need calibration data", Choices = "rtn|gptq|flexround|lrq")]
    public string Method { get; init; } = "rtn";

    [Option("GPTQ's damping, as a share of the Hessian's mean diagonal", Min = 0)]
    public double Damp { get; init; } = 0.01;

    [Option("flexround/lrq: reconstruct each layer's output, or each LLaMA-style decoder block's (block: the seven linears learned " +
        "together from the quantized previous blocks' output; layers outside blocks, and models without them, fall back to layer)",
        Choices = "layer|block")]
    public string Scope { get; init; } = "layer";

    [Option("flexround/lrq: Adam steps per layer or block (the papers' 5000)", Min = 0)]
    public int Iterations { get; init; } = 5000;

    [Option("flexround/lrq: Adam's learning rate, cosine decay to 0 (0: the reference's — flexround 3e-3, lrq 9e-4, 5e-4 with " +
        "quantized activations)", Min = 0)]
    public double LearningRate { get; init; }

    [Option("lrq: rank of L·U (0: min(N, K) / 4, the paper's 1024 for 4096-wide layers)", Min = 0)]
    public int Rank { get; init; }

    [Option("flexround/lrq: calibration sequences per step", Min = 1)]
    public int Batch { get; init; } = 2;

    [Option("flexround/lrq: seed of the batch order and of LRQ's U", Min = 0)]
    public int Seed { get; init; }

    [Option("flexround/lrq: COAT's FP8 e4m3 cache of the layers' inputs (one scale per tensor; scope block: of the blocks' inputs and " +
        "targets, one scale per 1×32 group)")]
    public bool Fp8Cache { get; init; } = true;

    [Option("flexround/lrq: COAT's FP8 Adam moments (groups of 128, dynamic range expansion)")]
    public bool Fp8Optimizer { get; init; } = true;

    [Option("flexround/lrq: early stop after this many loss windows (iterations / 40 steps) without 0.1 % improvement (0: off)",
        Min = 0)]
    public int Patience { get; init; } = 8;

    [Option("flexround/lrq: share of the calibration sequences held out from training (chosen with the seed; at least 1; none with " +
        "fewer than 4): the early stop, the best snapshot and learned-or-RTN are chosen by the error on them (0: off, every row " +
        "trains and chooses)", Min = 0, Max = 0.5)]
    public double Holdout { get; init; } = RoundingSettings.DefaultHoldout;

    public override string? Check() =>
        Scope == "block" && Method is not ("flexround" or "lrq")
            ? $"scope: block applies to methods flexround and lrq, not {Method}"
            : Given("holdout") && Method is not ("flexround" or "lrq")
                ? $"holdout applies to methods flexround and lrq (learned rounding), not {Method}" : null;
}
