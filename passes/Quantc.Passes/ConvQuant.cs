using System.Globalization;
using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// What Conv layers take of a recipe's plan, and the parts of their lowering MatMul layers do not need. A Conv runs on ONNX
/// Runtime's integer kernel as QLinearConv, which its QDQ fusion forms from DequantizeLinear(x) (uint8 or int8, per tensor),
/// DequantizeLinear(W) (int8, symmetric, per output channel: axis 0), DequantizeLinear(B) (int32, scale s_x·s_w, zero point 0)
/// → Conv → QuantizeLinear(y) (the same type as x): unlike MatMul (MatMulIntegerToFloat), a Conv needs its output quantized
/// too, so the ranges pass also calibrates Conv outputs (<see cref="OutputRole"/>).
/// </summary>
internal static class ConvQuant
{
    /// <summary>The role of a Conv output's range in <see cref="QuantPlan.Activations"/>.</summary>
    public const string OutputRole = "conv output";

    /// <summary>
    /// Adjusts the plan the quantize pass made for Conv layer <paramref name="l"/> to what its lowering takes (int8 or fp16 weights,
    /// per channel, symmetric; static uint8 / int8 activations); each change is a reason on the plan. False when the layer stays float.
    /// </summary>
    public static bool Adjust(LinearLayer l, LayerPlan plan)
    {
        if (plan.WeightFormat != NumberFormat.Fp16 && !plan.WeightFormat.IsInt8Storage)
        {
            plan.WeightFormat = NumberFormat.Fp32;
            plan.ActivationFormat = NumberFormat.Fp32;
            plan.Reasons.Add($"kept float: {l.Form} weights are lowered as int8 per output channel (or fp16), not as the recipe's format");
            return false;
        }
        if (plan.WeightGranularity != Granularity.PerChannel || plan.GroupSize != 0)
        {
            plan.WeightGranularity = Granularity.PerChannel;
            plan.GroupSize = 0;
            plan.Reasons.Add("quantize: per_channel for a Conv (QLinearConv takes one weight scale per output channel)");
        }
        if (!plan.WeightSymmetric)
        {
            plan.WeightSymmetric = true;
            plan.Reasons.Add("quantize: symmetric weights for a Conv (QLinearConv takes weight zero points of 0)");
        }
        if (plan.ActivationFormat == NumberFormat.Fp32) return true;
        if (plan.ActivationMode == ActivationMode.Dynamic && l.Conv is { Transposed: false } && plan.WeightFormat.IsInt8Storage
            && (plan.ActivationFormat == NumberFormat.Int8 || plan.ActivationFormat == NumberFormat.UInt8))
        {
            if (plan.ActivationFormat != NumberFormat.UInt8)
                plan.Reasons.Add($"quantize: dynamic {plan.ActivationFormat} activations of a Conv as uint8 per tensor (ConvInteger " +
                    "takes DynamicQuantizeLinear's uint8)");
            plan.ActivationFormat = NumberFormat.UInt8;
        }
        else if (plan.ActivationMode == ActivationMode.Dynamic)
        {
            plan.ActivationFormat = NumberFormat.Fp32;
            plan.Reasons.Add("quantize: weights only for a Conv: dynamic activations here are per token (rows of the last axis), " +
                "which a Conv's input does not have, and a ConvTranspose or non-int8 weights have no ConvInteger form (use " +
                "mode: static)");
        }
        else if (plan.ActivationFormat != NumberFormat.UInt8 && plan.ActivationFormat != NumberFormat.Int8)
        {
            plan.Reasons.Add($"quantize: {plan.ActivationFormat} activations of a Conv kept float (QLinearConv takes uint8 or int8)");
            plan.ActivationFormat = NumberFormat.Fp32;
        }
        return true;
    }

    /// <summary>
    /// The bias <paramref name="b"/> as int32 behind DequantizeLinear: q[c] = round(b[c] / (s_x·s_w[c])), scale s_x·s_w[c] along its
    /// last axis, zero point 0 (the form ONNX Runtime's QDQ fusions take for a bias); the DequantizeLinear's output.
    /// </summary>
    public static Value Int32Bias(PassContext ctx, Graph g, LinearLayer l, Value b, float sx, float[] weightScales, Node before)
    {
        var t = b.Initializer!;
        var bias = t.ToFloat32();
        int n = bias.Length;
        var scales = new float[n];
        var ints = new int[n];
        for (int c = 0; c < n; c++)
        {
            scales[c] = sx * weightScales[c];
            ints[c] = (int)Math.Clamp(Math.Round(bias[c] / scales[c]), int.MinValue, int.MaxValue);
        }
        var bq = g.AddInitializer(Tensor.FromValues<int>(b.Name + "_int32", (int)DT.Int32, t.Dims, ints));
        var bs = g.AddInitializer(Tensor.FromFloats(b.Name + "_scale", [n], scales));
        var bz = g.AddInitializer(Tensor.FromValues<int>(b.Name + "_zero_point", (int)DT.Int32, [n], new int[n]));
        var dq = new Emitter(g, before, l.Name).Node("DequantizeLinear", "/bias_dq", bq, bs, bz);
        dq.SetAttribute("axis", (long)(t.Dims.Length - 1));
        ctx.Provenance.Record(dq.Output.Name, b.Name);
        return dq.Output;
    }

    /// <summary>
    /// A static MatMul layer with a bias Add, or a Gemm with a bias C: the bias as int32 behind DequantizeLinear
    /// (<see cref="Int32Bias"/>). With a float bias, ONNX Runtime 1.31 fuses MatMul + Add into a float Gemm (MatMulAddFusion)
    /// and runs it on the dequantized values; with the bias dequantized too, its QDQ fusion makes the integer QGemm.
    /// </summary>
    public static void LowerStaticBias(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan)
    {
        Node? add = l.BiasAdd ?? (l.Node.Is("Gemm") ? l.Node : null);
        if (add is null || l.Bias is not { IsInitializer: true } b || plan.ActivationFormat == NumberFormat.Fp32
            || plan.ActivationMode != ActivationMode.Static || !plan.WeightFormat.IsInt8Storage || plan.QuantizedWeight is not { } q
            || q.GroupSize != 0 || plan.ActivationRange is not { } range || b.Initializer!.ElementCount != l.OutFeatures) return;
        if (plan.ActivationFormat != NumberFormat.UInt8 && plan.ActivationFormat != NumberFormat.Int8) return;
        var (sx, _) = Grid(plan.ActivationFormat, range);
        int slot = add.Is("Gemm") ? 2 : ReferenceEquals(add.Inputs[0], b) ? 0 : 1;
        add.SetInput(slot, Int32Bias(ctx, g, l, b, sx, q.Scales, add));
        plan.Reasons.Add("lower_qdq: bias as int32 behind DequantizeLinear (ONNX Runtime's QDQ fusion then forms the integer QGemm)");
    }

    /// <summary>Says on screen how many Conv layers the recipe could not take as it asked (weights only, or float).</summary>
    public static void Summarize(PassContext ctx)
    {
        var convs = ctx.Map.Linears.Where(l => l.Conv is not null && ctx.Plan.TryGet(l.Name, out _)).Select(l => ctx.Plan[l.Name]).ToList();
        int weightsOnly = convs.Count(p => p.Reasons.Any(r => r.StartsWith("quantize: weights only for a Conv", StringComparison.Ordinal)));
        int kept = convs.Count(p => !p.WeightFormat.IsReduced);
        if (weightsOnly > 0)
            ctx.Notice($"quantize: {weightsOnly} of {convs.Count} Conv layers get int8 weights only: dynamic (per-token) activations " +
                "do not apply to a Conv's input; use a static recipe (w8a8) for QLinearConv");
        if (kept > 0)
            ctx.Notice($"quantize: {kept} of {convs.Count} Conv layers stay float: Conv weights are lowered as int8 per channel or fp16");
    }

    /// <summary>Conv layers with static quantized activations: their outputs need a range too.</summary>
    public static IEnumerable<LinearLayer> StaticConvs(PassContext ctx) => ctx.Map.Linears.Where(l => l.Conv is not null &&
        ctx.Plan.TryGet(l.Name, out var p) && p.ActivationFormat != NumberFormat.Fp32 && p.ActivationMode == ActivationMode.Static);

    /// <summary>Records each static Conv's output range (<see cref="OutputRole"/>) from <paramref name="stats"/>.</summary>
    public static void RecordOutputRanges(PassContext ctx, IReadOnlyDictionary<string, TensorStats> stats,
        RangeMethod method, double percentile, string methodName)
    {
        foreach (var l in StaticConvs(ctx))
        {
            var plan = ctx.Plan[l.Name];
            var range = RangeSelector.Select(stats[l.Output.Name], method, percentile, plan.ActivationFormat.SymmetricLevels);
            ctx.Plan.SetActivation(new ActivationPlan(l.Output.Name, l.Name, OutputRole)
                { Format = plan.ActivationFormat, Range = range, RangeMethod = methodName });
        }
    }

    /// <summary>The (scale, zero point) of <paramref name="format"/> (uint8 asymmetric or int8 symmetric) over <paramref name="range"/>,
    /// as lower_qdq quantizes activations.</summary>
    public static (float Scale, float ZeroPoint) Grid(NumberFormat format, (float Lo, float Hi) range)
    {
        if (format == NumberFormat.UInt8)
        {
            float lo = Math.Min(range.Lo, 0), hi = Math.Max(range.Hi, 0);
            float s = Math.Max((hi - lo) / 255f, 1e-12f);
            return (s, MathF.Round(-lo / s));
        }
        return (Math.Max(Math.Max(Math.Abs(range.Lo), Math.Abs(range.Hi)) / format.SymmetricLevels, 1e-12f), 0);
    }

    /// <summary>
    /// After the weight and input of Conv <paramref name="l"/> were lowered: its bias as int32 behind DequantizeLinear (scale
    /// s_x·s_w per output channel), and its output through QuantizeLinear → DequantizeLinear with the calibrated output range, so
    /// that ONNX Runtime forms QLinearConv.
    /// </summary>
    public static void LowerStatic(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan)
    {
        if (plan.ActivationFormat == NumberFormat.Fp32 || plan.QuantizedWeight is not { } q || plan.ActivationRange is not { } inRange)
            return;
        if (!ctx.Plan.Activations.TryGetValue(l.Output.Name, out var outPlan) || outPlan.Role != OutputRole)
            throw new Quantc.Onnx.BadInputException($"lower_qdq: Conv {l.Name} has no output range: put a ranges pass before lower_qdq");
        var (sx, _) = Grid(plan.ActivationFormat, inRange);
        int n = (int)l.OutFeatures;
        if (l.Bias is { } b) l.Node.SetInput(2, Int32Bias(ctx, g, l, b, sx, q.Scales, l.Node));
        var (sy, zy) = Grid(outPlan.Format, outPlan.Range);
        var y = l.Node.Output;
        // Before the output's first reader (at the end when only the graph reads it).
        var e = new Quantc.Ir.Building.Emitter(g, GraphOrder.FirstUser(g, y), l.Name + "/out");
        var ys = e.Float("_scale", sy);
        var yz = outPlan.Format == NumberFormat.UInt8 ? e.UInt8("_zero_point", (byte)zy) : e.Int8("_zero_point", 0);
        var yq = e.Op("QuantizeLinear", "_q", y, ys, yz);
        var ydq = e.Op("DequantizeLinear", "_dq", yq, ys, yz);
        g.ReplaceValue(y, ydq);
        yq.Producer!.SetInput(0, y);
        // ONNX Runtime 1.31's CPU provider has no integer ConvTranspose kernel: it runs the QDQ ConvTranspose in float on the
        // dequantized weight (the stored weight is int8); providers with QDQ ConvTranspose support fuse the same form.
        string form = l.Conv!.Transposed ? $"QDQ ConvTranspose form, weight scales {(l.Conv.Group > 1 ? "in blocks of in/group along axis 0"
            : "on axis 1")} (ONNX Runtime CPU runs it in float on the dequantized int8 weight)" : "QLinearConv form";
        plan.Reasons.Add(string.Create(CultureInfo.InvariantCulture,
            $"lower_qdq: {form} (bias int32 at s_x·s_w, output {outPlan.Format} over " +
            $"[{outPlan.Range.Lo:G4}, {outPlan.Range.Hi:G4}])"));
    }
}
