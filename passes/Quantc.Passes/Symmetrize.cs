using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;

namespace Quantc.Passes;

/// <summary>
/// OutlierTune's symmetrization: each channel of a LayerNorm's output is shifted by the centre of its
/// calibrated range, z_j = (max_j + min_j) / 2, folded into the norm's β (β' = β − z) and compensated
/// in every reading linear layer's bias (b' = b + zᵀ·W), so the channel ranges are balanced around zero
/// before quantization. Function-preserving. A decomposed RMSNorm has no β: it gets one, an explicit Add of −z after the
/// norm (which the model map then reads as the norm's β, so smooth and fold_norm scale and fold it like LayerNorm's, and
/// fuse_norm keeps it after RMSNormalization); fused RMSNorm ops are left alone with the reason.
/// <c>shift: range_centre</c> (the default) takes the centre of the whole calibrated range;
/// <c>mean_centre</c> (as OutlierTune's reference code computes it) the mean over calibration samples of
/// each sample's channel centre (max + min) / 2 — on the reference OPT at W6A6 it measured slightly
/// worse (bench/RESULTS.md). Without calibration data (saved statistics only) the range centre is used.
/// </summary>
public sealed partial class SymmetrizePass(bool meanCentre = false, IReadOnlyList<string>? exclude = null) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<SymmetrizeOptions>("symmetrize", PassKind.FunctionPreserving,
        "OutlierTune: centre each channel's range, the shift folded into β and the biases",
        o => new SymmetrizePass(o.Shift == "mean_centre", o.Exclude));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var targets = new List<(NormInfo Norm, IReadOnlyList<LinearLayer> Readers)>();
        foreach (var norm in map.Norms)
        {
            if (norm.Beta is not null && norm.Beta.Initializer is null)
            {
                ctx.Log.Add($"symmetrize: {norm.Name} skipped: its β is not an initializer");
                continue;
            }
            if (norm.Beta is null && ShiftRefusal(norm) is { } no)
            {
                ctx.Log.Add($"symmetrize: {norm.Name} skipped: {no}");
                continue;
            }
            var readers = NormReaders.Of(norm, map, out string? why);
            if (readers is null) { ctx.Log.Add($"symmetrize: {norm.Name} skipped: {why}"); continue; }
            var excluded = exclude ?? SmoothOptions.DefaultExclude;
            if (readers.All(r => excluded.Any(p => System.Text.RegularExpressions.Regex.IsMatch(r.Name, p))))
            {
                string readerNames = string.Join(", ", readers.Select(r => r.Name));
                ctx.Log.Add($"symmetrize: {norm.Name} skipped: its readers ({readerNames}) are excluded " +
                    "(stay float)");
                continue;
            }
            targets.Add((norm, readers));
        }
        if (targets.Count == 0)
        {
            int noBeta = map.Norms.Count(n => n.Beta is null && ShiftRefusal(n) is not null);
            ctx.Notice(noBeta > 0 && noBeta == map.Norms.Count
                ? $"symmetrize: skipped on all {noBeta} norms: fused RMSNorm ops have no β to fold the shift into and take no explicit " +
                    "one here (nothing symmetrized)" +
                    UnusedShift(ctx, map)
                : $"symmetrize: nothing symmetrized: {map.Norms.Count} norms, {noBeta} fused without β, the others' readers not all " +
                    "linear " +
                    $"layers");
            return;
        }
        var names = targets.Select(t => t.Norm.Output.Name).ToList();
        // mean_centre also needs each sample's per-channel centre: taken in the same calibration run as the statistics.
        var centres = meanCentre && ctx.CalibrationData is { Count: > 0 } ? new MeanCentres(names) : null;
        var stats = ctx.Calibrate(names, Name, centres is null ? null : centres.Observe);
        var meanCentres = centres?.Result();
        foreach (var (norm, readers) in targets)
        {
            var st = stats[norm.Output.Name];
            var z = meanCentres?[norm.Output.Name] ?? Smoothing.SymmetrizationShift(st.ChannelMin, st.ChannelMax);
            if (norm.Beta is { Initializer: { } bt })
            {
                var beta = bt.ToFloat32();
                for (int j = 0; j < beta.Length; j++) beta[j] -= z[j];
                g.SetInitializer(norm.Beta, Tensor.FromFloats(norm.Beta.Name, bt.Dims, beta));
                ctx.Provenance.RecordTransformed(norm.Output.Name, "shifted");
            }
            else ctx.Provenance.RecordTransformed(ExplicitShift(g, norm, z).Name, "shifted");
            foreach (var l in readers)
            {
                var w = Weights.Read(l);
                var bias = Smoothing.CompensateBias(w, (int)l.InFeatures, (int)l.OutFeatures, z, l.Bias?.Initializer?.ToFloat32() ?? []);
                string result = l.Output.Name;
                Weights.WriteBias(g, l, bias, new PassContextBias(ctx));
                // x·W before the bias now lacks z·W (the bias gives it back): only the layer's result is unchanged.
                if (l.Node.Outputs[0] is { } product && product.Name != result) ctx.Provenance.RecordTransformed(product.Name, "shifted");
                ctx.Plan[l.Name].Transforms.Add($"symmetrized via {norm.Name}");
                ctx.ReleaseLayerCopies();
            }
            var (before, after) = AbsMaxBeforeAfter(st);
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"symmetrize: {norm.Name}: max |z| {z.Max(MathF.Abs):G3}; channel absmax {before:G4} → {after:G4}"));
        }
    }
}

public sealed partial class SymmetrizePass
{
    /// <summary>Why a norm without β takes no explicit shift (only a decomposed float32 RMSNorm does), or null.</summary>
    private static string? ShiftRefusal(NormInfo norm) =>
        norm.Kind != NormKind.RmsNorm ? "a LayerNorm without β"
        : norm.Form != "decomposed" ? $"{norm.Form} has no β to fold the shift into (the decomposed RMSNorm takes an explicit one)"
        : norm.Gamma.Initializer is not { DataType: (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float }
            ? "its γ is not a float32 initializer" : null;

    /// <summary>
    /// The shift as the RMSNorm's β: y' = y − z, an Add of the constant −z after the norm, read by every former reader of y (the
    /// sum takes y's name; the map then reads the norm with this β). Returns the shifted value.
    /// </summary>
    private static Value ExplicitShift(Graph g, NormInfo norm, float[] z)
    {
        var y = norm.Output;
        var shift = g.AddInitializer(Tensor.FromFloats(g.UniqueName(norm.Name + ".symmetrize_shift"), [z.Length],
            z.Select(v => -v).ToArray()));
        var add = new Quantc.Ir.Building.Emitter(g, GraphOrder.FirstUser(g, y), norm.Name).Node("Add", "/symmetrize_shift", y, shift);
        g.ReplaceValue(y, add.Output);
        add.SetInput(0, y);
        return add.Output;
    }

    /// <summary>The largest channel absmax of a norm output before and after centring each channel's range.</summary>
    private static (double Before, double After) AbsMaxBeforeAfter(Quantc.Core.Calibration.TensorStats st) => (
        st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => Math.Max(Math.Abs(hi), Math.Abs(lo))).Max(),
        st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => (hi - lo) / 2).Max());

    /// <summary>
    /// On a model whose norms have no β: what the shift would have done, measured on the calibration data (the norm outputs whose
    /// readers are all linear layers): the largest |z| and the largest relative cut of a norm output's channel absmax — the gain
    /// OutlierTune's symmetrization gives up on this model. Empty without calibration data or such norms.
    /// </summary>
    private static string UnusedShift(PassContext ctx, ModelMap map)
    {
        var norms = map.Norms.Where(n => NormReaders.Of(n, map, out _) is not null).ToList();
        if (norms.Count == 0 || ctx.CalibrationData is not { Count: > 0 }) return "";
        var stats = ctx.Calibrate(norms.Select(n => n.Output.Name).ToList(), Info.Name);
        var cuts = norms.Select(n =>
        {
            var st = stats[n.Output.Name];
            var z = Smoothing.SymmetrizationShift(st.ChannelMin, st.ChannelMax);
            var (before, after) = AbsMaxBeforeAfter(st);
            return (n.Name, Z: z.Max(MathF.Abs), Before: before, After: after, Cut: before > 0 ? 1 - after / before : 0);
        }).OrderBy(x => x.Cut).ToList();
        var worst = cuts[^1];
        double median = cuts.Count % 2 == 1 ? cuts[cuts.Count / 2].Cut : (cuts[cuts.Count / 2 - 1].Cut + cuts[cuts.Count / 2].Cut) / 2;
        return string.Create(CultureInfo.InvariantCulture, $"; measured on the calibration data: a shift would move channel " +
            $"centres by up to {worst.Z:G3} and cut the largest channel absmax by {100 * worst.Cut:0.0} % ({worst.Name}: " +
            $"{worst.Before:G4} → {worst.After:G4}; median over the {cuts.Count} norms {100 * median:0.0} %) — " +
            $"this compile equals the recipe without symmetrize");
    }
}

/// <summary>The options of <see cref="SymmetrizePass"/>.</summary>
public sealed record SymmetrizeOptions : PassOptions
{
    [Option("each channel's shift: the centre of its calibrated range, or its mean", Choices = "range_centre|mean_centre")]
    public string Shift { get; init; } = "range_centre";

    [Option("layers left in float (quantize's exclude): a norm read only by them is not shifted", Regex = true)]
    public IReadOnlyList<string> Exclude { get; init; } = SmoothOptions.DefaultExclude;
}

/// <summary>Per tensor: the mean over samples of each sample's per-channel centre (max + min) / 2 — an observer for <see
/// cref="PassContext.Calibrate"/>.</summary>
internal sealed class MeanCentres(IReadOnlyList<string> names)
{
    private readonly Dictionary<string,
        (double[] Sum, int Count)> _sums = names.Distinct().ToDictionary(n => n, _ => (Array.Empty<double>(), 0), StringComparer.Ordinal);

    public void Observe(string name, ReadOnlySpan<float> x, int channels)
    {
        var mn = new float[channels];
        var mx = new float[channels];
        Array.Fill(mn, float.PositiveInfinity);
        Array.Fill(mx, float.NegativeInfinity);
        for (int r = 0; r < x.Length / channels; r++)
            for (int c = 0; c < channels; c++) { float v = x[r * channels + c]; if (v < mn[c]) mn[c] = v; if (v > mx[c]) mx[c] = v; }
        lock (_sums)
        {
            var (sum, count) = _sums[name];
            if (sum.Length == 0) sum = new double[channels];
            for (int c = 0; c < channels; c++) sum[c] += 0.5 * ((double)mn[c] + mx[c]);
            _sums[name] = (sum, count + 1);
        }
    }

    public Dictionary<string, float[]> Result() =>
        _sums.ToDictionary(kv => kv.Key, kv => kv.Value.Sum.Select(v => (float)(v / Math.Max(kv.Value.Count, 1))).ToArray());
}
