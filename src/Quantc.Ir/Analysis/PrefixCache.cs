using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// The KV-cache form a prefix of constant keys and values leaves (PrefixQuant's prefix_tokens): the past cache input
/// read through Concat(Expand(constant prefix, batch), past) on the sequence axis, and the present cache leaving through
/// a Slice that drops the prefix positions, under the output's name. The attention analysis sees through both, so the
/// cache streams still name the model's past inputs and present outputs.
/// </summary>
public static class PrefixCache
{
    /// <summary>The past graph input behind <paramref name="v"/> when <paramref name="v"/> is Concat(Expand(constant, ·), past)
    /// on axis 2 (or −2 of rank 4), else null.</summary>
    public static Value? PastBehind(Value? v)
    {
        if (v?.Producer is not { } c || !c.Is("Concat") || c.Inputs.Count != 2 || c.GetInt("axis", 0) is not (2 or -2)) return null;
        var (pre, past) = (c.Inputs[0], c.Inputs[1]);
        if (pre?.Producer is not { } e || !e.Is("Expand") || !Constants.IsConstant(e.Inputs[0])) return null;
        return past is { IsGraphInput: true, IsInitializer: false } ? past : null;
    }

    /// <summary>True when <paramref name="n"/> is a Slice of constant starts on axis 2 whose output is a graph output (the present
    /// cache after the prefix).</summary>
    public static bool IsPresentSlice(Node n) =>
        n.Is("Slice") && n.Inputs.Count >= 4 && Constants.IsConstant(n.Inputs[1]) && Constants.Ints(Constants.Of(n.Inputs[3])) is [2]
            && n.Output.IsGraphOutput && n.Output.Uses.Count == 0;

    /// <summary>The present output after <paramref name="v"/>'s prefix Slice, when that Slice is <paramref name="v"/>'s only reader
    /// and <paramref name="v"/> is no graph output; else null.</summary>
    public static Value? PresentAfter(Value v) =>
        v.Uses is [var u] && !v.IsGraphOutput && IsPresentSlice(u.Node) && u.InputIndex == 0 ? u.Node.Output : null;
}
