using Quantc.Core.Pipeline;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Reports;

/// <summary>
/// The charts of a compile, drawn from what its report already holds: each pass's time, the layers grouped by the formats
/// decided, the compiled model's initializer bytes by element type, and the static activation range decided for each layer.
/// The set is fixed (<see cref="Names"/>), so that <c>compile --charts</c> can declare its files before any work.
/// </summary>
public static class CompileCharts
{
    /// <summary>The charts' names, in page order (file stems of <c>compile --charts</c>).</summary>
    public static readonly IReadOnlyList<string> Names = ["pass-times", "layer-formats", "weight-bytes", "activation-ranges"];

    /// <summary>The charts of a compile whose passes filled <paramref name="ctx"/> (<c>ctx.Model</c> is the compiled model).</summary>
    public static IReadOnlyList<ReportChart> Build(PassContext ctx, IReadOnlyList<PassTiming> timings)
    {
        var passes = timings.Select(t => (t.Pass, Math.Round(t.Elapsed.TotalMilliseconds, 1))).ToList();
        var layers = ctx.Plan.Layers.ToList();
        var formats = layers.GroupBy(Formats).Select(g => (g.Key, (double)g.Count())).OrderByDescending(x => x.Item2).ToList();
        var bytes = ctx.Model.Graph.Initializers.Select(v => v.Initializer!)
            .GroupBy(t => Enum.IsDefined((DT)t.DataType) ? ((DT)t.DataType).ToString().ToLowerInvariant() : $"type {t.DataType}")
            .Select(g => (g.Key, g.Sum(t => t.ByteLength) / 1048576.0)).OrderByDescending(x => x.Item2).ToList();
        var ranged = layers.Where(p => p.ActivationRange is not null)
            .Select(p => (p.Name, (double)p.ActivationRange!.Value.Lo, (double)p.ActivationRange.Value.Hi)).ToList();
        return
        [
            Charts.Bars(Names[0], $"time per pass (ms), {passes.Count} passes", "ms", passes),
            Charts.Bars(Names[1], $"linear layers by the formats decided, {layers.Count} layers", "layers", formats),
            Charts.Bars(Names[2], "initializer bytes of the compiled model by element type (MiB)", "MiB", bytes),
            Charts.RangePerLayer(Names[3], ranged.Count == 0
                ? "static activation ranges decided: none (no layer has a static activation range)"
                : $"static activation range decided per layer (max |bound|), {ranged.Count} of {layers.Count} layers",
                "layer (in the order of the layers table)", ranged),
        ];
    }

    /// <summary>A layer's formats without its per-layer details (transforms, smoothing strengths): what the layers are grouped by.
    /// </summary>
    private static string Formats(LayerPlan p)
    {
        if (p.LoweredBy is null) return "float (not lowered)";
        string w = p.WeightFormat == NumberFormat.Fp32 || p.WeightFormat == NumberFormat.Fp16 ? $"{p.WeightFormat} W"
            : $"{p.WeightFormat} W {p.WeightGranularity.Name()}{(p.GroupSize > 0 ? $" g{p.GroupSize}" : "")}";
        string a = p.ActivationFormat == NumberFormat.Fp32 ? "fp32 A" : $"{p.ActivationFormat} A {p.ActivationMode.Name()}";
        return $"{w} / {a}";
    }
}
