using Quantc.Core.Calibration;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Core.Data;

/// <summary>
/// The token ids and sequence lengths a text model accepts, read from its graph before anything runs:
/// ids are non-negative and below the rows of the embedding table the token input indexes (else the
/// width of a fixed logits output); a sequence is no longer than the rows of a table indexed by
/// position_ids (learned or rotary positions, rotary caches of attention operators), or of a table indexed by positions computed
/// from attention_mask (OPT's learned positions), and fits the fixed dimensions of the inputs made from it.
/// ONNX Runtime would otherwise wrap a negative id, or fail mid-run with a log line of its own.
/// </summary>
public sealed record TokenLimits(long? Vocabulary, string? VocabularySource, long? Positions, string? PositionSource,
    IReadOnlyList<(string Input, long?[] Shape)> FixedInputs)
{
    /// <summary>The limits of <paramref name="graph"/> (null where the graph does not tell).</summary>
    public static TokenLimits Of(Graph graph)
    {
        (long? rows, string? src) vocab = (null, null), positions = (null, null);
        foreach (var n in graph.Nodes)
        {
            // Rotary caches indexed by position: com.microsoft RotaryEmbedding (x, position_ids, cos_cache, ...),
            // ONNX RotaryEmbedding (x, cos_cache, sin_cache, position_ids), GroupQueryAttention's cos_cache (input 7),
            // ai.quantc CausalAttention's RoPE inside (cos_cache input 6, position_ids input 8).
            bool causal = n.Is("CausalAttention", Runtime.CustomOps.Domain);
            int cache = n.Is("RotaryEmbedding", "com.microsoft") ? 2 : n.Is("RotaryEmbedding") ? 1
                : n.Is("GroupQueryAttention", "com.microsoft") ? 7 : causal ? 6 : -1;
            int pos = cache == 2 ? 1 : cache == 1 ? 3 : causal ? 8 : -1;
            if (cache >= 0 && n.Inputs.Count > cache && n.Inputs[cache]?.Initializer is { Dims.Length: 2 } cos
                && (pos < 0 || (n.Inputs.Count > pos && n.Inputs[pos] is { } p &&
                    Origin(p) is { IsGraphInput: true, Name: "position_ids" }))
                && (positions.rows is null || cos.Dims[0] < positions.rows))
                positions = (cos.Dims[0], $"rows of '{cos.Name}'");
            if (!n.Is("Gather") || n.Inputs.Count < 2 || n.Inputs[0]?.Initializer is not { } table || n.Inputs[1] is not { } indices)
                continue;
            long axis = n.GetInt("axis", 0);
            if (axis < 0) axis += table.Dims.Length;
            if (axis < 0 || axis >= table.Dims.Length) continue;
            long rows = table.Dims[axis];
            var origin = Origin(indices);
            if (!origin.IsGraphInput)
            {
                if (MaskPositionOffset(indices) is { } k && rows - 1 - k is var fit && fit > 0 && (positions.rows is null ||
                    fit < positions.rows))
                    positions = (fit, $"rows of '{table.Name}' less {1 + k}: positions computed from attention_mask (cumsum {k:+0;-0})");
                continue;
            }
            if (CalibrationInputs.IsTokenInput(origin.Name) && (vocab.rows is null || rows < vocab.rows))
                vocab = (rows, $"rows of '{table.Name}'");
            else if (origin.Name == "position_ids" && (positions.rows is null || rows < positions.rows))
                positions = (rows, $"rows of '{table.Name}'");
        }
        if (vocab.rows is null && graph.Outputs.FirstOrDefault(o => o.Name == "logits")?.Shape is { Length: > 0 } s && s[^1] is { } width)
            vocab = (width, "width of the logits output");
        var fixedInputs = graph.Inputs
            .Where(v => !v.IsInitializer && (CalibrationInputs.IsTokenInput(v.Name) || v.Name is "attention_mask" or "position_ids") &&
                v.Shape is not null)
            .Select(v => (v.Name, v.Shape!)).ToList();
        return new TokenLimits(vocab.rows, vocab.src, positions.rows, positions.src, fixedInputs);
    }

    /// <summary>Refuses (<see cref="BadInputException"/>) the first sequence the model cannot take; <paramref name="source"/> names the
    /// data.</summary>
    public void Check(IReadOnlyList<long[]> sequences, string source)
    {
        for (int s = 0; s < sequences.Count; s++)
        {
            var seq = sequences[s];
            for (int i = 0; i < seq.Length; i++)
            {
                long id = seq[i];
                if (id < 0)
                    throw new BadInputException($"{source}: token id {id} (sample {s + 1}, position {i + 1}) is negative");
                if (Vocabulary is { } v && id >= v)
                    throw new BadInputException($"{source}: token id {id} (sample {s + 1}, position {i + 1}) is outside the model's " +
                        $"vocabulary of {v} ({VocabularySource})");
            }
            if (Positions is { } p && seq.Length > p)
                throw new BadInputException($"{source}: a sample of {seq.Length} tokens is longer than the model's {p} positions " +
                    $"({PositionSource}); give at most {p} tokens per sample (--seq-len)");
            foreach (var (input, shape) in FixedInputs)
            {
                // Token data is fed as [1, tokens] (see CalibrationInputs.FromTokens).
                if (shape.Length != 2)
                    throw new BadInputException($"{source}: input '{input}' has {shape.Length} dimensions; token data is fed as [batch, " +
                        $"tokens]");
                if (shape[0] is { } b && b != 1)
                    throw new BadInputException($"{source}: input '{input}' has a fixed batch of {b}; token data is fed one sample at a " +
                        $"time");
                if (shape[1] is { } len && len != seq.Length)
                    throw new BadInputException($"{source}: input '{input}' takes exactly {len} tokens, not {seq.Length}; give " +
                        $"--seq-len {len}");
            }
        }
    }

    /// <summary>
    /// Positions computed from the attention mask, as OPT's learned positions (cumsum(mask)·mask − 1 + 2): when
    /// <paramref name="indices"/> is the mask's running sum plus a constant k (through Add/Sub of integer scalars, Mul by the mask,
    /// Slice and reshapes), k; a sequence of L tokens then reads row L + k. Null for anything else.
    /// </summary>
    private static long? MaskPositionOffset(Value indices)
    {
        long k = 0;
        var v = indices;
        for (int hops = 0; hops < 32; hops++)
        {
            if (v.Producer is not { IsOnnxDomain: true } p || p.Inputs.Count == 0 || p.Inputs[0] is not { } first) return null;
            switch (p.OpType)
            {
                case "CumSum":
                    return IsMask(first) ? k : null;
                case "Add" or "Sub" when p.Inputs.Count == 2 && p.Inputs[1] is { } second:
                    if (IntScalar(second) is { } c) { k += p.OpType == "Add" ? c : -c; v = first; }
                    else if (p.OpType == "Add" && IntScalar(first) is { } c0) { k += c0; v = second; }
                    else return null;
                    break;
                case "Mul" when p.Inputs.Count == 2 && p.Inputs[1] is { } second:
                    // The running sum times the 0/1 mask: the largest position is unchanged.
                    if (IsMask(second)) v = first;
                    else if (IsMask(first)) v = second;
                    else return null;
                    break;
                case "Slice" or "Cast" or "Identity" or "Reshape" or "Squeeze" or "Unsqueeze" or "Flatten":
                    v = first;
                    break;
                default:
                    return null;
            }
        }
        return null;
    }

    private static bool IsMask(Value v) => Origin(v) is { IsGraphInput: true, Name: "attention_mask" };

    /// <summary>An int64 or int32 initializer of one element, else null.</summary>
    private static long? IntScalar(Value v) => v.Initializer is { ElementCount: 1 } t
        ? t.DataType == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Int64 ? t.AsSpan<long>()[0]
        : t.DataType == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Int32 ? t.AsSpan<int>()[0] : null
        : null;

    /// <summary>The value <paramref name="v"/> is a reshaped or converted copy of (through Cast, Identity, Reshape, Squeeze, Unsqueeze,
    /// Flatten).</summary>
    private static Value Origin(Value v)
    {
        for (int hops = 0; hops < 16; hops++)
        {
            if (v.Producer is not { IsOnnxDomain: true,
                OpType: "Cast" or "Identity" or "Reshape" or "Squeeze" or "Unsqueeze" or "Flatten" } p || p.Inputs.Count == 0 ||
                p.Inputs[0] is not { } src)
                break;
            v = src;
        }
        return v;
    }
}
