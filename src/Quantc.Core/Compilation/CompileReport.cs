using System.Text.Json;
using System.Text.Json.Serialization;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;

namespace Quantc.Core.Compilation;

/// <summary>
/// What <c>quantc compile</c> writes next to the model (<c>*.report.json</c>): the recipe, the warnings, every pass's
/// time and node counts, every layer's plan with the reasons behind it, the passes' log and the verification.
/// </summary>
public sealed record CompileReport(
    string Input,
    string Output,
    string Recipe,
    string RecipeDescription,
    IReadOnlyList<string> Warnings,
    IReadOnlyList<PassReport> Passes,
    IReadOnlyList<LayerReport> Layers,
    IReadOnlyList<string> Log,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] CompileVerifyReport? Verify)
{
    /// <summary>Always "quantc" (the first field of the file).</summary>
    [JsonPropertyOrder(-1)]
    public string Generator => "quantc";

    /// <summary>The report of a compile of <paramref name="recipe"/> whose passes filled <paramref name="ctx"/>.</summary>
    public static CompileReport Create(string input, string output, Recipe recipe, PassContext ctx, IReadOnlyList<PassTiming> timings,
        IReadOnlyList<string> warnings, VerifyReport? verify, string? verifyData) =>
        new(input, output, recipe.Name, recipe.Description, [.. warnings],
            [.. timings.Select(PassReport.From)], [.. ctx.Plan.Layers.Select(LayerReport.From)], [.. ctx.Log],
            verify is null ? null : CompileVerifyReport.From(verify, verifyData));

    /// <summary>The report as indented JSON (snake_case names; NaN as null, infinities as "inf" / "-inf"), ending with a newline.</summary>
    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary>One pass of a compile: its kind, time (ms, to 0.1), the graph's node count before and after, the process's CPU time over
/// the pass (all threads) and the part of its time spent in calibration runs.</summary>
public sealed record PassReport([property: JsonPropertyName("pass")] string Pass, string Kind, double Ms, int NodesBefore, int NodesAfter,
    double CpuMs, double CalibrationMs)
{
    public static PassReport From(PassTiming t) =>
        new(t.Pass, t.Kind.ToString(), Math.Round(t.Elapsed.TotalMilliseconds, 1), t.NodesBefore, t.NodesAfter,
            Math.Round(t.Cpu.TotalMilliseconds, 1), Math.Round(t.Calibration.TotalMilliseconds, 1));
}

/// <summary>One linear layer's plan: formats, granularity, rounding, activation range, and the transforms and reasons behind
/// them.</summary>
public sealed record LayerReport(
    string Name,
    string Summary,
    string Weights,
    string Granularity,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] int? GroupSize,
    string WeightMethod,
    string Activations,
    string ActivationMode,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<float>? ActivationRange,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? RangeMethod,
    IReadOnlyList<string> Transforms,
    IReadOnlyList<string> Reasons)
{
    public static LayerReport From(LayerPlan p) =>
        new(p.Name, p.ToString(), p.WeightFormat.Name, p.WeightGranularity.Name(), p.GroupSize > 0 ? p.GroupSize : null, p.WeightMethod,
            p.ActivationFormat.Name, p.ActivationMode.Name(),
            p.ActivationRange is { } r ? [r.Lo, r.Hi] : null,
            // The range method is reported with the range (the range passes set both).
            p.ActivationRange is null ? null : p.RangeMethod,
            [.. p.Transforms], [.. p.Reasons]);
}

/// <summary>The compile's verification: the logits output (else the first) and, for language models, next-token metrics.</summary>
public sealed record CompileVerifyReport(
    string? Data,
    string Output,
    [property: JsonConverter(typeof(ReportNumberConverter))] double SqnrDb,
    [property: JsonConverter(typeof(ReportNumberConverter))] double Cosine,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull),
        JsonConverter(typeof(ReportNumberConverter))] double? Top1Agreement,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull),
        JsonConverter(typeof(ReportNumberConverter))] double? PerplexityOriginal,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull),
        JsonConverter(typeof(ReportNumberConverter))] double? PerplexityCompiled)
{
    public static CompileVerifyReport From(VerifyReport v, string? data)
    {
        var o = v.Outputs.FirstOrDefault(x => x.Name == "logits") ?? v.Outputs[0];
        return new(data, o.Name, o.SqnrDb, o.Cosine, v.Logits?.Top1Agreement, v.Logits?.OriginalPerplexity, v.Logits?.CompiledPerplexity);
    }
}
