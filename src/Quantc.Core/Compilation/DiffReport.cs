using System.Text.Json.Serialization;
using Quantc.Core.Diff;

namespace Quantc.Core.Compilation;

/// <summary>What <c>quantc diff --json</c> prints: whether the models are identical, how nodes were matched, and the changes by layer, node
/// and initializer.</summary>
public sealed record DiffReport(
    bool Identical,
    DiffMatchedReport Matched,
    IReadOnlyList<LayerSummary> Layers,
    IReadOnlyList<DiffNodeReport> Nodes,
    IReadOnlyList<DiffInitializerReport> Initializers)
{
    /// <summary>The report of <paramref name="d"/>.</summary>
    public static DiffReport From(DiffResult d) => new(
        d.IsEmpty,
        new DiffMatchedReport(d.MatchedByProvenance, d.MatchedByName, d.MatchedByStructure),
        d.Layers,
        [.. d.Nodes.Select(n =>
            new DiffNodeReport(n.Change.ToString().ToLowerInvariant(), n.Layer, n.NameA, n.NameB, n.OpA, n.OpB, n.Detail))],
        [.. d.Initializers.Select(i =>
            new DiffInitializerReport(i.Layer, i.NameA, i.NameB, i.DtypeA, i.DtypeB, i.ShapeA, i.ShapeB, i.BytesA, i.BytesB, i.MaxAbsDelta,
            i.SqnrDb, i.Detail))]);

    /// <summary>The report as indented JSON, ending with a newline.</summary>
    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary>How many nodes were matched by provenance, by name and by structure.</summary>
public sealed record DiffMatchedReport(int Provenance, int Name, int Structure);

/// <summary>One changed node (<c>a</c> / <c>b</c>: its name in each model, null where it is absent).</summary>
public sealed record DiffNodeReport(
    string Change,
    string Layer,
    [property: JsonPropertyName("a")] string? A,
    [property: JsonPropertyName("b")] string? B,
    string OpA,
    string OpB,
    string Detail);

/// <summary>One changed initializer, with the numeric delta where both sides compare (else null).</summary>
public sealed record DiffInitializerReport(
    string Layer,
    [property: JsonPropertyName("a")] string? A,
    [property: JsonPropertyName("b")] string? B,
    string DtypeA,
    string DtypeB,
    string ShapeA,
    string ShapeB,
    long BytesA,
    long BytesB,
    [property: JsonConverter(typeof(ReportNumberConverter))] double? MaxAbsDelta,
    [property: JsonConverter(typeof(ReportNumberConverter))] double? SqnrDb,
    string Detail);
