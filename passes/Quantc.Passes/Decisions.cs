using System.Globalization;
using System.Text.RegularExpressions;
using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
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
public sealed class QuantizePass(string weights, string granularity, int groupSize, string activations, string mode, IReadOnlyList<string> exclude,
    IReadOnlyList<string> dynamic, bool symmetric, string reduceRange) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<QuantizeOptions>("quantize", PassKind.Decision,
        "base precision of every linear layer",
        o => new QuantizePass(o.Weights, o.Granularity, o.GroupSize, o.Activations, o.Mode, o.Exclude, o.Dynamic, o.Symmetric, o.ReduceRange));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        if (activations == "fp8" && (mode == "dynamic" || dynamic.Count > 0))
            throw new Quantc.Onnx.BadInputException("quantize: fp8 activations are static per-tensor (float8 e4m3fn); use mode: static without dynamic patterns");
        bool u8s8 = weights == "int8" && activations is "uint8" or "int8";
        bool reduce = u8s8 && reduceRange switch
        {
            "true" => true,
            "auto" => !CpuFeatures.HasInt8DotProduct,
            _ => false,
        };
        if (u8s8 && reduceRange == "auto")
            ctx.Log.Add(reduce
                ? $"quantize: reduce_range auto → on: this CPU ({CpuFeatures.Description}) has no int8 dot-product instructions (VNNI), and ONNX Runtime's U8S8 kernel would saturate with full-range int8 weights; weights on a 7-bit grid"
                : $"quantize: reduce_range auto → off: this CPU ({CpuFeatures.Description}) has int8 dot-product instructions");
        foreach (var l in LayerAnalysis.Analyze(ctx.Model.Graph).Linears)
        {
            var plan = ctx.Plan[l.Name];
            if (exclude.Any(p => Regex.IsMatch(l.Name, p)))
            {
                plan.Reasons.Add($"kept float: matches an exclude pattern");
                continue;
            }
            if (granularity == "per_group" && l.InFeatures % groupSize != 0)
            {
                plan.Reasons.Add($"kept float: in_features {l.InFeatures} is not a multiple of group size {groupSize}");
                continue;
            }
            // float8 weights take one per-tensor scale (the range of e4m3fn covers a tensor's spread).
            plan.WeightGranularity = weights == "fp8" ? "per_tensor" : granularity;
            plan.GroupSize = granularity == "per_group" && weights != "fp8" ? groupSize : 0;
            plan.WeightSymmetric = symmetric;
            plan.ActivationFormat = activations;
            plan.ActivationMode = dynamic.Any(p => Regex.IsMatch(l.Name, p)) ? "dynamic" : mode;
            // Per-token dynamic rows sit around the zero point 128 (most |q| small), so ONNX Runtime's int16 pair sums
            // rarely saturate with full-range weights: auto keeps their int8 weights (measured more accurate than int7:
            // bench/RESULTS.md), true puts them on the 7-bit grid too (exact on any CPU).
            bool reduceHere = reduce && (plan.ActivationMode == "static" || reduceRange == "true");
            string weightFormat = reduceHere ? "int7" : weights;
            plan.WeightFormat = weightFormat;
            plan.Reasons.Add($"quantize: {weightFormat} weights{(reduceHere ? $" (reduce_range: {plan.ActivationMode} 8-bit activations on ONNX Runtime's U8S8 kernel, a CPU without VNNI)" : "")} ({granularity}{(symmetric ? "" : ", asymmetric")}), {activations} activations ({plan.ActivationMode})");
        }
    }
}

/// <summary>
/// Spike-aware mixed precision: from per-token calibration statistics of each projection's input, the
/// layers whose inputs carry activation spikes (largest token absmax over the median token absmax
/// above <c>threshold</c>) keep fp16 weights and float activations; at most <c>budget</c> (a share
/// of the quantized layers) are kept, largest spikes first. <c>keep</c> / <c>force</c> name patterns
/// that always stay high / always quantize (manual overrides win).
/// </summary>
public sealed class SpikeMixedPass(double threshold, double budget, string highPrecision, IReadOnlyList<string> keep, IReadOnlyList<string> force) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<SpikeMixedOptions>("spike_mixed", PassKind.Decision,
        "keep the projections whose inputs carry activation spikes in high precision",
        o => new SpikeMixedPass(o.Threshold, o.Budget, o.Precision, o.Keep, o.Force));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = LayerAnalysis.Analyze(ctx.Model.Graph).Linears.Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.ActivationFormat != "fp32").ToList();
        if (layers.Count == 0) return;
        var stats = ctx.Calibrate(layers.Select(l => l.Input.Name).Distinct().ToList(), Name);
        int maxKept = (int)Math.Floor(budget * layers.Count);
        var ranked = layers.Select(l => (Layer: l, Ratio: (double)stats[l.Input.Name].SpikeRatio)).OrderByDescending(x => x.Ratio).ToList();
        int kept = 0;
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
                plan.WeightGranularity = "per_tensor";
                plan.GroupSize = 0;
                // fp8: float8 e4m3fn weights and static activations, each with one per-tensor scale (its range holds the spikes).
                plan.ActivationFormat = highPrecision == "fp8" ? "fp8" : "fp32";
                plan.ActivationMode = "static";
                plan.Reasons.Add(manual ? $"spike_mixed: kept {highPrecision} (override)" : $"spike_mixed: kept {highPrecision}: input spike ratio {r} > {threshold.ToString(CultureInfo.InvariantCulture)}");
                ctx.Log.Add($"spike_mixed: {l.Name} kept {highPrecision} (spike ratio {r})");
                if (!manual) kept++;
            }
            else if (ratio > threshold)
                plan.Reasons.Add($"spike_mixed: quantized despite spike ratio {r}: budget of {maxKept} layers used");
        }
    }
}

/// <summary>Ranges: static activation ranges for every layer with static quantized activations, from calibration statistics with the chosen selector.</summary>
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
        }, o.Percentile));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = LayerAnalysis.Analyze(ctx.Model.Graph).Linears
            .Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.ActivationFormat != "fp32" && p.ActivationMode == "static").ToList();
        if (layers.Count == 0) return;
        var stats = ctx.Calibrate(layers.Select(l => l.Input.Name).Distinct().ToList(), Name);
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            int levels = plan.ActivationFormat switch { "int6" => 31, "int4" => 7, _ => 127 };
            var range = RangeSelector.Select(stats[l.Input.Name], method, percentile, levels);
            plan.ActivationRange = range;
            plan.RangeMethod = method == RangeMethod.Percentile ? $"percentile {percentile.ToString(CultureInfo.InvariantCulture)}" : method.ToString().ToLowerInvariant();
        }
    }
}

/// <summary>Weights: rounds every quantized layer's weight with RTN or GPTQ (GPTQ accumulates each layer's input Hessian over the calibration data).</summary>
public sealed class WeightsPass(string method, double damp) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<WeightsOptions>("weights", PassKind.Decision,
        "round the weights",
        o => new WeightsPass(o.Method, o.Damp));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = LayerAnalysis.Analyze(ctx.Model.Graph).Linears
            .Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.WeightFormat is "int8" or "int7" or "int4" or "int6" or "fp8").ToList();
        Dictionary<string, double[]>? hessians = method == "gptq" ? Hessians(ctx, layers.Where(l => ctx.Plan[l.Name].WeightFormat != "fp8").ToList()) : null;
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            var kn = Weights.Read(l);
            int k = (int)l.InFeatures, n = (int)l.OutFeatures;
            var nk = new float[kn.Length];
            for (int j = 0; j < k; j++) for (int c = 0; c < n; c++) nk[c * k + j] = kn[j * n + c];
            if (plan.WeightFormat == "fp8")
            {
                // float8 rounds to its own grid (nearest even, saturating), per-tensor scale; GPTQ here is for integer grids.
                plan.QuantizedWeight = WeightQuantizer.Float8PerTensor(nk, n, k, QuantFormat.Float8E4M3Fn);
                plan.WeightMethod = "rtn";
                continue;
            }
            var format = plan.WeightFormat switch { "int4" => QuantFormat.Int4, "int6" => Int6, "int7" => Int7, _ => QuantFormat.Int8 };
            if (hessians is not null && !plan.WeightSymmetric)
                throw new Quantc.Onnx.BadInputException($"{l.Name}: GPTQ here is symmetric; use quantize symmetric: true or weights method: rtn");
            plan.QuantizedWeight = hessians is not null
                ? WeightQuantizer.Gptq(nk, n, k, hessians[l.Input.Name], format, plan.GroupSize, damp)
                : plan.WeightSymmetric ? WeightQuantizer.Rtn(nk, n, k, format, plan.GroupSize)
                : WeightQuantizer.RtnAsymmetric(nk, n, k, format, plan.GroupSize);
            plan.WeightMethod = method;
        }
    }

    /// <summary>A 6-bit signed grid stored in int8 (OutlierTune's Int6 setting, simulated on int8 storage).</summary>
    public static readonly QuantFormat Int6 = new("int6", QuantFormat.Int8.DataType, 8, false, -32, 31);

    /// <summary>A 7-bit signed grid stored in int8 (reduce_range: U8S8 without pair-sum saturation on CPUs without VNNI).</summary>
    public static readonly QuantFormat Int7 = new("int7", QuantFormat.Int8.DataType, 8, false, -64, 63);

    private static Dictionary<string, double[]> Hessians(PassContext ctx, List<LinearLayer> layers)
    {
        if (ctx.CalibrationData is null) throw new Quantc.Onnx.BadInputException("GPTQ needs calibration data: give --calib DATA");
        var inputs = layers.GroupBy(l => l.Input.Name).ToDictionary(g => g.Key, g => (int)g.First().InFeatures);
        var h = inputs.ToDictionary(kv => kv.Key, kv => new double[kv.Value * kv.Value]);
        Calibrator.Observe(ctx.Model, inputs.Keys.ToList(), ctx.CalibrationData, (name, data, channels) =>
        {
            lock (h[name]) WeightQuantizer.AccumulateHessian(h[name], data, channels);
        });
        return h;
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

    [Option("activation format (fp32: weight-only)", Choices = "int8|uint8|int6|fp8|fp32")]
    public string Activations { get; init; } = "int8";

    [Option("static (calibrated per-tensor range) or dynamic (per-token scale at run time)", Choices = "static|dynamic")]
    public string Mode { get; init; } = "static";

    [Option("layers left in float", Regex = true)]
    public IReadOnlyList<string> Exclude { get; init; } = ["^lm_head$"];

    [Option("layers whose activations are dynamic per token whatever the mode", Regex = true)]
    public IReadOnlyList<string> Dynamic { get; init; } = [];

    [Option("symmetric weights (zero point 0), or asymmetric min-max")]
    public bool Symmetric { get; init; } = true;

    [Option("7-bit weights for static uint8 activations (auto: when the compiling CPU has no VNNI, where ONNX Runtime's U8S8 kernel saturates)",
        Choices = "auto|true|false")]
    public string ReduceRange { get; init; } = "auto";
}

/// <summary>The options of <see cref="SpikeMixedPass"/>.</summary>
public sealed record SpikeMixedOptions : PassOptions
{
    [Option("an input's spike ratio (largest token absmax over the median token absmax) above which its layer is kept", Min = 0, MinExclusive = true)]
    public double Threshold { get; init; } = 50;

    [Option("the largest share of the quantized layers kept", Min = 0, Max = 1)]
    public double Budget { get; init; } = 0.1;

    [Option("what kept layers become (fp8: float8 e4m3fn weights and static activations with per-tensor scales)", Choices = "fp16|fp8|fp32")]
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
    [Option("rounding: round to nearest, or GPTQ (Hessian-aware, needs calibration data)", Choices = "rtn|gptq")]
    public string Method { get; init; } = "rtn";

    [Option("GPTQ's damping, as a share of the Hessian's mean diagonal", Min = 0)]
    public double Damp { get; init; } = 0.01;
}
