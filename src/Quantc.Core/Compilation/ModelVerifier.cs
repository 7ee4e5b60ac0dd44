using System.Globalization;
using System.Text.Json.Serialization;
using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Ir;

namespace Quantc.Core.Compilation;

/// <summary>When a verification fails: an output's SQNR below <paramref name="MinSqnrDb"/>, or perplexity rising by more than <paramref
/// name="MaxPerplexityIncrease"/> (0.05 = 5 %).</summary>
public sealed record VerifyThresholds(double? MinSqnrDb = null, double? MaxPerplexityIncrease = null)
{
    /// <summary>
    /// One line per threshold <paramref name="r"/> misses (empty: it passes). The gates fail closed: with any gate
    /// given, every result that is not finite (NaN or infinite outputs, a NaN perplexity) is a failure.
    /// </summary>
    public IReadOnlyList<string> FailuresOf(VerifyReport r)
    {
        var f = new List<string>();
        if (MinSqnrDb is null && MaxPerplexityIncrease is null) return f;
        f.AddRange(r.NonFinite());
        if (MinSqnrDb is { } m)
            foreach (var o in r.Outputs)
                if (o.NonFinite == 0 && !(o.SqnrDb >= m))
                    f.Add(string.Create(CultureInfo.InvariantCulture,
                        $"output '{o.Name}': SQNR {ReportNumberConverter.Db(o.SqnrDb)} dB < {m} dB"));
        if (MaxPerplexityIncrease is { } p)
        {
            if (r.Logits is not { ScoredTokens: > 0 } l) f.Add("perplexity: no token was scored");
            else if (double.IsFinite(l.OriginalPerplexity) && double.IsFinite(l.CompiledPerplexity) &&
                !(l.CompiledPerplexity <= l.OriginalPerplexity * (1 + p)))
                f.Add(string.Create(CultureInfo.InvariantCulture,
                    $"perplexity {l.CompiledPerplexity:0.000} > {l.OriginalPerplexity:0.000} × (1 + {p})"));
        }
        return f;
    }
}

/// <summary>A verification: the measurements, the data they were taken on, and the thresholds it missed.</summary>
public sealed record VerifyOutcome(VerifyReport Report, string Data, IReadOnlyList<string> Failures)
{
    public bool Passed => Failures.Count == 0;

    /// <summary>The JSON report of <c>quantc verify --json</c>, as records.</summary>
    public VerifyJsonReport ToReport() => new(
        Data, Report.Samples,
        [.. Report.Outputs.Select(x =>
            new VerifyOutputReport(x.Name, x.SqnrDb, x.Cosine, x.MaxAbsError, x.Elements, x.NonFinite, x.SqnrVsExactDb,
            x.OriginalNoiseSqnrDb))],
        Report.Logits is { } l ? new VerifyLogitsReport(l.Top1Agreement, l.OriginalPerplexity, l.CompiledPerplexity, l.ScoredTokens) : null,
        Report.Greedy is { } gm ? new VerifyGreedyReport(gm.Start, gm.Steps, gm.Matching) : null,
        [.. Report.Layers.Select(x => new VerifyLayerReport(x.CompiledName, x.OriginalName, x.Op, x.SqnrDb, x.Cosine, x.MaxAbsError))],
        [.. Failures], Passed);

    /// <summary><see cref="ToReport"/> as indented JSON, ending with a newline.</summary>
    public string ToJson() => ReportJson.Serialize(ToReport());
}

/// <summary>
/// <c>quantc verify</c> as a library: runs the original and the compiled model in ONNX Runtime on held-out data,
/// measures every output (and, per layer, every mapped intermediate tensor), optionally against the original evaluated
/// in float64, and checks the thresholds.
/// </summary>
public static class ModelVerifier
{
    /// <summary>
    /// Verifies <paramref name="compiled"/> against <paramref name="original"/> on <paramref name="data"/> (loaded for the
    /// original). With <paramref name="exactReferencePath"/> (the original's file, loaded once more and converted to
    /// float64) both models are also compared with the exact evaluation.
    /// </summary>
    public static VerifyOutcome Run(Model original, Model compiled, LoadedData data, VerifyThresholds? thresholds = null,
        bool perLayer = true, string? exactReferencePath = null, IStageRunner? stages = null)
    {
        using var x64 = exactReferencePath is null ? null : Model.Load(exactReferencePath);
        if (x64 is not null) Float64Model.Convert(x64);
        var report = (stages ?? SilentStages.Instance).Run("verifying",
            p => Verifier.Run(original, compiled, data.Samples, data.Tokens,
                new VerifyOptions { PerLayer = perLayer, ExactReference = x64 }, p));
        return new VerifyOutcome(report, data.Description, (thresholds ?? new VerifyThresholds()).FailuresOf(report));
    }
}

/// <summary>What <c>quantc verify --json</c> prints.</summary>
public sealed record VerifyJsonReport(
    string Data,
    int Samples,
    IReadOnlyList<VerifyOutputReport> Outputs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] VerifyLogitsReport? Logits,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] VerifyGreedyReport? Greedy,
    IReadOnlyList<VerifyLayerReport> Layers,
    IReadOnlyList<string> Failures,
    bool Passed);

/// <summary>The error of one model output; with an exact reference also against it and the original's own float32 noise.</summary>
public sealed record VerifyOutputReport(
    string Name,
    [property: JsonConverter(typeof(ReportNumberConverter))] double SqnrDb,
    [property: JsonConverter(typeof(ReportNumberConverter))] double Cosine,
    [property: JsonConverter(typeof(ReportNumberConverter))] double MaxAbsError,
    long Elements,
    long NonFinite,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull),
        JsonConverter(typeof(ReportNumberConverter))] double? SqnrVsExactDb,
    [property: JsonPropertyName("original_float32_noise_sqnr_db"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull),
        JsonConverter(typeof(ReportNumberConverter))]
    double? OriginalNoiseSqnrDb);

/// <summary>Next-token metrics.</summary>
public sealed record VerifyLogitsReport(
    [property: JsonConverter(typeof(ReportNumberConverter))] double Top1Agreement,
    [property: JsonConverter(typeof(ReportNumberConverter))] double PerplexityOriginal,
    [property: JsonConverter(typeof(ReportNumberConverter))] double PerplexityCompiled,
    long ScoredTokens);

/// <summary>Greedy decoding of both models from the start token: how many of the generated tokens match before the first
/// divergence.</summary>
public sealed record VerifyGreedyReport(long StartToken, int Steps, int MatchingTokens);

/// <summary>The error of one intermediate tensor, named as in the compiled and the original model.</summary>
public sealed record VerifyLayerReport(
    string Tensor,
    string Original,
    string Op,
    [property: JsonConverter(typeof(ReportNumberConverter))] double SqnrDb,
    [property: JsonConverter(typeof(ReportNumberConverter))] double Cosine,
    [property: JsonConverter(typeof(ReportNumberConverter))] double MaxAbsError);
