using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// The additive attention mask the exporters build for a causal decoder with padding, recognised from its ops:
/// <c>Where(allowed, 0, float32 lowest)</c> with <c>allowed = And(causal, keep)</c> (either order, or <c>causal</c>
/// alone), <c>causal = LessOrEqual(Range(0, T, 1), Unsqueeze(Range(T − S, T, 1), [1]))</c> (or the same as
/// <c>GreaterOrEqual(rows, cols)</c>) — query i, at absolute position T − S + i, sees the keys j ≤ T − S + i — and
/// <c>keep = Unsqueeze(Cast(attention_mask, bool), [1, 2])</c> on an int64 graph input [batch, T] (0: padding).
/// T must be the same tensor in both Ranges and the Sub. On this mask a query that sees no key (a left-padded position) gets
/// zeros from ONNX Runtime's Attention (1.32), and from the causal kernel; other fill values are not taken.
/// </summary>
public sealed record CausalMask(Value? KeyPadding)
{
    /// <summary>The mask behind <paramref name="mask"/>, or null with <paramref name="why"/>.</summary>
    public static CausalMask? Match(Value? mask, out string why)
    {
        why = "";
        if (mask is null) { why = "no mask (the attention is not causal)"; return null; }
        if (mask.Producer is not { } where || !where.Is("Where"))
        {
            string made = mask.Producer is { } p ? "made by " + p.OpType : "a graph input or constant";
            why = $"the mask is {made}, not Where(causal ∧ padding, 0, lowest)";
            return null;
        }
        float? zero = Scalar(where.Inputs[1]), low = Scalar(where.Inputs[2]);
        if (zero != 0f || low != float.MinValue)
        {
            why = $"the mask's Where gives {Show(zero)} where allowed and {Show(low)} elsewhere, not 0 and float32 lowest";
            return null;
        }
        var allowed = where.Inputs[0]!;
        Value? keep = null;
        Node? causal = allowed.Producer;
        if (causal is { } and && and.Is("And"))
        {
            var (a, b) = (and.Inputs[0]!, and.Inputs[1]!);
            bool aCausal = IsCausal(a.Producer);
            (causal, keep) = aCausal ? (a.Producer, b) : (b.Producer, a);
        }
        if (!IsCausal(causal))
        {
            why = "the mask's condition is not LessOrEqual(Range(0, T), Unsqueeze(Range(T − S, T), [1])) (a causal triangle)";
            return null;
        }
        if (keep is null) return new CausalMask((Value?)null);
        if (PaddingInput(keep) is not { } input)
        {
            why = "the mask's padding part is not Unsqueeze(Cast(attention_mask, bool), [1, 2]) on an int64 graph input [batch, T]";
            return null;
        }
        return new CausalMask(input);
    }

    private static string Show(float? v) =>
        v is { } f ? f.ToString("R", System.Globalization.CultureInfo.InvariantCulture) : "a non-constant";

    private static float? Scalar(Value? v) =>
        Constants.Of(v) is { ElementCount: 1 } t && Constants.IsFloatingPoint(t.DataType) ? t.ToFloat32()[0] : null;

    private static long[]? Ints(Value? v) => Constants.Ints(Constants.Of(v));

    /// <summary>LessOrEqual(cols, rows) or GreaterOrEqual(rows, cols), cols = Range(0, T, 1),
    /// rows = Unsqueeze(Range(T − S, T, 1), [1]).</summary>
    private static bool IsCausal(Node? n)
    {
        if (n is null || n.Inputs.Count != 2) return false;
        (Value cols, Value rows) = n.Is("LessOrEqual") ? (n.Inputs[0]!, n.Inputs[1]!)
            : n.Is("GreaterOrEqual") ? (n.Inputs[1]!, n.Inputs[0]!) : (null!, null!);
        if (cols is null) return false;
        if (cols.Producer is not { } rc || !rc.Is("Range") || Ints(rc.Inputs[0]) is not [0] || Ints(rc.Inputs[2]) is not [1]) return false;
        var total = rc.Inputs[1]!;
        if (rows.Producer is not { } un || !un.Is("Unsqueeze") || UnsqueezeAxes(un) is not [1]) return false;
        if (un.Inputs[0]!.Producer is not { } rr || !rr.Is("Range") || rr.Inputs[1] != total || Ints(rr.Inputs[2]) is not [1]) return false;
        return rr.Inputs[0]!.Producer is { } sub && sub.Is("Sub") && sub.Inputs[0] == total;
    }

    private static long[]? UnsqueezeAxes(Node un) => un.Inputs.Count > 1 ? Ints(un.Inputs[1]) : un.GetInts("axes")?.ToArray();

    /// <summary>The graph input behind Unsqueeze(Cast(input, bool), [1, 2]).</summary>
    private static Value? PaddingInput(Value keep)
    {
        if (keep.Producer is not { } un || !un.Is("Unsqueeze") || UnsqueezeAxes(un) is not [1, 2]) return null;
        if (un.Inputs[0]!.Producer is not { } cast || !cast.Is("Cast") || cast.GetInt("to", 0) != 9) return null;
        var input = cast.Inputs[0]!;
        // int64, as the kernel reads it
        return input.IsGraphInput && input.ElementType == 7 && input.Shape is { Length: 2 } ? input : null;
    }
}
