using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// The per-op rules of "the last axis stays in whole heads", shared by the map's two walkers: the cache streams
/// (<see cref="CacheStream"/>, keys and values followed back from an attention) and the head regions
/// (<see cref="HeadRegion"/>, a v_proj's output followed forward to o_proj). Each returns null when the op keeps the
/// last axis whole, else the reason.
/// </summary>
public static class HeadAxis
{
    /// <summary>True when a Transpose leaves the last axis last.</summary>
    public static bool TransposeKeepsLast(Node transpose) =>
        transpose.GetInts("perm") is { Count: > 0 } perm && perm[^1] == perm.Count - 1;

    /// <summary>An Unsqueeze's axes (input 1 from opset 13, the attribute before), null when not constant.</summary>
    public static long[]? UnsqueezeAxes(Node unsqueeze) =>
        Constants.Ints(Constants.Of(unsqueeze.Inputs.Count > 1 ? unsqueeze.Inputs[1] : null)) ?? unsqueeze.GetInts("axes")?.ToArray();

    /// <summary>
    /// An Unsqueeze must not insert a new last axis. The output rank is <paramref name="outputRank"/>, or the input's
    /// <paramref name="inputRank"/> plus the axes; <paramref name="rank"/> is set to it.
    /// </summary>
    public static string? Unsqueeze(Node n, int? inputRank, int? outputRank, out int rank)
    {
        rank = 0;
        var axes = UnsqueezeAxes(n);
        int? r = outputRank ?? (inputRank is int ir && axes is not null ? ir + axes.Length : null);
        if (axes is null || r is null) return $"Unsqueeze '{n.Name}': axes or rank unknown";
        rank = r.Value;
        return axes.Any(a => a == -1 || a == r - 1) ? $"Unsqueeze '{n.Name}' inserts a new last axis" : null;
    }

    /// <summary>A Concat must join along an axis other than the last, of a value of known <paramref name="rank"/>.</summary>
    public static string? Concat(Node n, int? rank)
    {
        long axis = n.GetInt("axis", 0);
        return rank is not int r || axis == -1 || axis == r - 1 || axis < -r || axis >= r
            ? $"Concat '{n.Name}' joins along the last axis (or an axis of unknown place)" : null;
    }

    /// <summary>
    /// An Expand must not broadcast the last axis: its constant shape ends in 1, or in the last dimension
    /// <paramref name="last"/> when that is known.
    /// </summary>
    public static string? Expand(Node n, long? last)
    {
        var shape = Constants.Ints(Constants.Of(n.Inputs[1]));
        return shape is null || shape.Length == 0 || (shape[^1] != 1 && shape[^1] != last)
            ? $"Expand '{n.Name}' may broadcast the last axis" : null;
    }
}
