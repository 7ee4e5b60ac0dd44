using System.Globalization;
using Quantc.Core.Calibration;
using Quantc.Onnx;

namespace Quantc.Core.Verification;

/// <summary>
/// A compiled model that keeps PrefixQuant's prefix tokens in its KV cache (metadata <see cref="Key"/>, written by
/// prefix_tokens; BOS first) computes, for a sample of text read without its own BOS, what its float original computes on the
/// prefix followed by that text. Verify feeds the original that way and compares from the first text position on: outputs
/// and intermediates whose one axis is longer by the prefix in the original (logits, hidden states, the present caches,
/// attention scores) lose their first <c>Tokens.Length</c> entries along it.
/// </summary>
public sealed class PrefixAlignment
{
    /// <summary>The metadata key prefix_tokens writes: the prefix's token ids, comma-separated.</summary>
    public const string Key = "quantc.prefix_tokens";

    /// <summary>The prefix's token ids.</summary>
    public long[] Tokens { get; }

    private PrefixAlignment(long[] tokens) => Tokens = tokens;

    /// <summary>The prefix tokens in <paramref name="metadata"/>, empty when there is none.</summary>
    public static long[] Read(IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var value = metadata.FirstOrDefault(kv => kv.Key == Key).Value;
        if (string.IsNullOrEmpty(value)) return [];
        try { return value.Split(',').Select(t => long.Parse(t, NumberStyles.Integer, CultureInfo.InvariantCulture)).ToArray(); }
        catch (FormatException) { throw new BadInputException($"metadata {Key} is not a list of token ids: '{value}'"); }
        catch (OverflowException) { throw new BadInputException($"metadata {Key} is not a list of token ids: '{value}'"); }
    }

    /// <summary>The alignment of <paramref name="compiled"/> against <paramref name="original"/>: null when neither keeps a prefix or
    /// both keep the same one (they then read the same samples).</summary>
    public static PrefixAlignment? Of(Quantc.Ir.Model original, Quantc.Ir.Model compiled)
    {
        long[] a = Read(original.Metadata), b = Read(compiled.Metadata);
        if (a.SequenceEqual(b)) return null;
        if (a.Length > 0)
        {
            string theirs = b.Length == 0 ? "none" : $"[{string.Join(", ", b)}]";
            throw new BadInputException($"the original model keeps prefix tokens [{string.Join(", ", a)}] in its KV cache and the " +
                $"compiled one {theirs}: verify compares a model with a prefix against its float original, which has none");
        }
        return new PrefixAlignment(b);
    }

    /// <summary>The original's samples: the prefix, then each sample's tokens.</summary>
    public IReadOnlyList<CalibrationSample> OriginalSamples(Quantc.Ir.Graph original, IReadOnlyList<long[]>? tokens, int count)
    {
        if (tokens is null || tokens.Count != count)
            throw new BadInputException($"the compiled model keeps prefix tokens [{string.Join(", ", Tokens)}] in its KV cache " +
                "(prefix_tokens): verifying it needs token data (text or token ids), which the float original reads after the prefix");
        // The original reads the prefix ahead of each sample: the sample must leave room for it in the original's positions.
        if (Data.TokenLimits.Of(original) is { Positions: { } positions, PositionSource: var source }
            && tokens.FirstOrDefault(t => t.Length + Tokens.Length > positions) is { } tooLong)
            throw new BadInputException($"a sample of {tooLong.Length} tokens and the compiled model's {Tokens.Length} prefix tokens, " +
                $"which the original reads first, exceed the original's {positions} positions ({source}); give at most " +
                $"{positions - Tokens.Length} tokens per sample (--seq-len)");
        return tokens.Select(t => CalibrationInputs.FromTokens(original, [.. Tokens, .. t])).ToList();
    }

    /// <summary>
    /// <paramref name="data"/> (of shape <paramref name="shape"/>, the original's) without its first prefix-length entries along the
    /// one axis where it is longer than <paramref name="target"/> (the compiled model's shape) by the prefix; null when the
    /// shapes differ otherwise.
    /// </summary>
    public float[]? Align(float[] data, long[] shape, long[] target, out long[] aligned)
    {
        aligned = shape;
        if (shape.SequenceEqual(target)) return data;
        if (shape.Length != target.Length) return null;
        int axis = -1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == target[i]) continue;
            if (axis >= 0 || shape[i] != target[i] + Tokens.Length) return null;
            axis = i;
        }
        long outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= shape[i];
        for (int i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        long keep = target[axis] * inner, skip = Tokens.Length * inner, row = shape[axis] * inner;
        var result = new float[outer * keep];
        for (long o = 0; o < outer; o++) Array.Copy(data, o * row + skip, result, o * keep, keep);
        aligned = target;
        return result;
    }
}
