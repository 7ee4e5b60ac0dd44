namespace Quantc.Core.Pipeline;

/// <summary>What quantc decided for one linear layer, and why.</summary>
public sealed class LayerPlan(string name)
{
    /// <summary>Stable layer name (e.g. model.layers.3.mlp.down_proj).</summary>
    public string Name { get; } = name;

    /// <summary>Weight format (fp32: untouched).</summary>
    public NumberFormat WeightFormat { get; set; } = NumberFormat.Fp32;

    /// <summary>How many weights share a scale.</summary>
    public Granularity WeightGranularity { get; set; } = Granularity.PerChannel;

    /// <summary>Group size along K for per_group weights.</summary>
    public int GroupSize { get; set; }

    /// <summary>Symmetric weights (zero point 0) or asymmetric min-max weights with a zero point per scale.</summary>
    public bool WeightSymmetric { get; set; } = true;

    /// <summary>Weight rounding method (rtn, gptq).</summary>
    public string WeightMethod { get; set; } = "rtn";

    /// <summary>Activation format (fp32: not quantized).</summary>
    public NumberFormat ActivationFormat { get; set; } = NumberFormat.Fp32;

    /// <summary>Static or dynamic activation quantization.</summary>
    public ActivationMode ActivationMode { get; set; } = ActivationMode.Static;

    /// <summary>Static activation range (lo, hi), once chosen.</summary>
    public (float Lo, float Hi)? ActivationRange { get; set; }

    /// <summary>How the range was chosen (minmax, percentile 99.99, entropy, mse).</summary>
    public string? RangeMethod { get; set; }

    /// <summary>The rounded weight, once a weight pass chose it ([N, K] integer values and scales).</summary>
    public Numerics.QuantizedWeight? QuantizedWeight
    {
        get => _quantizedWeight;
        set => _quantizedWeight = value is not null && Spill?.Invoke(value.Values.LongLength) is { } file ? value.SpillTo(file) : value;
    }

    private Numerics.QuantizedWeight? _quantizedWeight;

    /// <summary>Where a large rounded weight's values go instead of memory (the model's spill file), if anywhere.</summary>
    internal Func<long, Quantc.Onnx.SpillFile?>? Spill { get; init; }

    /// <summary>The pass that turned the decisions into operators (lower_qdq, lower_w4a8...); null while the layer is still float
    /// in the graph. What the compile summary counts.</summary>
    public string? LoweredBy { get; set; }

    /// <summary>FireQ's per-tensor power of two t = 2^e: <see cref="QuantizedWeight"/> stands for t·W and the lowering divides the
    /// layer's output by t (0: none).</summary>
    public int WeightExponent { get; set; }

    /// <summary>Function-preserving transforms applied to this layer (smoothed α=0.5, symmetrized, rotated...).</summary>
    public List<string> Transforms { get; } = [];

    /// <summary>Why each decision was taken, in order ("kept fp16: input spike ratio 312 > 50").</summary>
    public List<string> Reasons { get; } = [];

    /// <summary>A one-line summary, e.g. "int8 W (per_channel, rtn) / int8 A (static, minmax); smoothed α=0.5".</summary>
    public override string ToString()
    {
        string w = WeightFormat == NumberFormat.Fp32 || WeightFormat == NumberFormat.Fp16 ? $"{WeightFormat} W"
            : $"{WeightFormat} W " +
                $"({WeightGranularity.Name()}{(GroupSize > 0 ? $" g{GroupSize}" : "")}{(WeightSymmetric ? "" : " asym")}, {WeightMethod})";
        string a = ActivationFormat == NumberFormat.Fp32 ? "fp32 A"
            : $"{ActivationFormat} A ({ActivationMode.Name()}{(RangeMethod is null ? "" : ", " + RangeMethod)})";
        return Transforms.Count == 0 ? $"{w} / {a}" : $"{w} / {a}; {string.Join(", ", Transforms)}";
    }
}

/// <summary>
/// The quantization of one activation that is not (only) a linear layer's input — an input of a
/// selective scan or of a conv: format, static range and why (keyed by the value's name).
/// </summary>
public sealed class ActivationPlan(string tensor, string owner, string role)
{
    /// <summary>The value's name in the model as the decision was taken.</summary>
    public string Tensor { get; } = tensor;

    /// <summary>The block that reads it (e.g. backbone.layers.0.mixer).</summary>
    public string Owner { get; } = owner;

    /// <summary>What it is to the block (scan x, dt, B, C, z; conv x).</summary>
    public string Role { get; } = role;

    /// <summary>Format (int8: symmetric, per tensor).</summary>
    public NumberFormat Format { get; set; } = NumberFormat.Int8;

    /// <summary>Static range (lo, hi).</summary>
    public (float Lo, float Hi) Range { get; set; }

    /// <summary>How the range was chosen (minmax, percentile 99.999).</summary>
    public string RangeMethod { get; set; } = "minmax";

    /// <summary>The symmetric int8 scale: max(|lo|, |hi|) / 127.</summary>
    public float Scale => Math.Max(Math.Max(Math.Abs(Range.Lo), Math.Abs(Range.Hi)) / 127f, 1e-12f);

    /// <summary>Why, in order.</summary>
    public List<string> Reasons { get; } = [];

    /// <inheritdoc/>
    public override string ToString() => $"{Owner} {Role}: {Format} ({RangeMethod})";
}

/// <summary>The decisions of a compile, per layer: filled by decision passes, read by lowering and the report.</summary>
public sealed class QuantPlan
{
    private readonly SortedDictionary<string, LayerPlan> _layers = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, ActivationPlan> _activations = new(StringComparer.Ordinal);

    /// <summary>Activations quantized for non-linear consumers (scan and conv inputs), by value name.</summary>
    public IReadOnlyDictionary<string, ActivationPlan> Activations => _activations;

    /// <summary>Records (or replaces) the plan of an activation.</summary>
    public void SetActivation(ActivationPlan plan) => _activations[plan.Tensor] = plan;

    /// <summary>Layers with a plan, by name.</summary>
    public IReadOnlyCollection<LayerPlan> Layers => _layers.Values;

    /// <summary>The plan of <paramref name="layer"/>, created on first use.</summary>
    public LayerPlan this[string layer] =>
        _layers.TryGetValue(layer, out var p) ? p : _layers[layer] = new LayerPlan(layer) { Spill = Spill };

    /// <summary>Where the layers' large rounded weights go instead of memory (<see cref="Quantc.Ir.Model.SpillFileFor"/>).</summary>
    public Func<long, Quantc.Onnx.SpillFile?>? Spill { get; init; }

    public bool TryGet(string layer, out LayerPlan plan) => _layers.TryGetValue(layer, out plan!);
}
