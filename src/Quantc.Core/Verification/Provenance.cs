using System.Text.Json;
using Quantc.Ir;

namespace Quantc.Core.Verification;

/// <summary>
/// Where each tensor of a compiled model comes from: passes record, for every value they rename
/// or rewrite, the original tensor it stands for. Stored in the model's metadata_props under
/// <see cref="MetadataKey"/> as a JSON object {compiled name: original name}, so <c>verify</c> and
/// <c>diff</c> can map tensors across rewrites, not only by equal names.
/// </summary>
public sealed class Provenance
{
    /// <summary>The metadata_props key.</summary>
    public const string MetadataKey = "quantc.provenance";

    private readonly SortedDictionary<string, string> _origin = new(StringComparer.Ordinal);

    /// <summary>Compiled tensor name → original tensor name.</summary>
    public IReadOnlyDictionary<string, string> Origins => _origin;

    /// <summary>Records that <paramref name="compiled"/> carries the value of original tensor <paramref name="original"/>
    /// (transitively).</summary>
    public void Record(string compiled, string original)
    {
        _origin[compiled] = _origin.TryGetValue(original, out var root) ? root : original;
    }

    /// <summary>
    /// Records that <paramref name="compiled"/> no longer carries its original's values but a transformed
    /// version of them (<paramref name="how"/>: "smoothed", "rotated", ...), e.g. a norm output after
    /// SmoothQuant divided its channels. Its origin becomes <c>ORIGINAL#how</c>, a name no original tensor
    /// has, so <c>verify</c> does not compare it (nor what is later recorded as standing for it) against
    /// the untransformed original, which would report a meaningless error. A later transform is appended
    /// (<c>ORIGINAL#rotated#prefix</c>): verify undoes PrefixQuant's prefix (<see cref="PrefixAlignment"/>), and only a
    /// tensor transformed by nothing else is then compared.
    /// </summary>
    public void RecordTransformed(string compiled, string how)
    {
        string origin = OriginOf(compiled);
        if (!origin.EndsWith("#" + how, StringComparison.Ordinal)) _origin[compiled] = origin + "#" + how;
    }

    /// <summary>True when <paramref name="compiled"/> was recorded as carrying transformed values (<see
    /// cref="RecordTransformed"/>).</summary>
    public bool IsTransformed(string compiled) => OriginOf(compiled).Contains('#', StringComparison.Ordinal);

    /// <summary>The original tensor a compiled tensor derives from, transformed or not (<see cref="OriginOf"/> without the <c>#how</c>
    /// mark): what the graph diff matches structurally.</summary>
    public string SourceOf(string compiled)
    {
        string origin = OriginOf(compiled);
        int hash = origin.IndexOf('#', StringComparison.Ordinal);
        return hash < 0 ? origin : origin[..hash];
    }

    /// <summary>The original tensor a compiled tensor stands for: recorded, else the same name.</summary>
    public string OriginOf(string compiled) => _origin.TryGetValue(compiled, out var o) ? o : compiled;

    /// <summary>Reads the provenance a model carries (empty when none).</summary>
    public static Provenance Of(Model model)
    {
        var p = new Provenance();
        foreach (var kv in model.Metadata)
        {
            if (kv.Key != MetadataKey) continue;
            try
            {
                var map = JsonSerializer.Deserialize<Dictionary<string, string>>(kv.Value);
                if (map is not null) foreach (var (k, v) in map) p._origin[k] = v;
            }
            catch (JsonException e)
            {
                throw new Quantc.Onnx.BadInputException($"model metadata '{MetadataKey}' is not valid JSON: {e.Message}");
            }
        }
        return p;
    }

    /// <summary>Writes this provenance into the model's metadata_props (stable key order).</summary>
    public void WriteTo(Model model) =>
        model.SetMetadata(MetadataKey, JsonSerializer.Serialize(_origin));
}
