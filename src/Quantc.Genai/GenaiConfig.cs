using System.Globalization;
using System.Text.Json.Nodes;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Onnx;

namespace Quantc.Genai;

/// <summary>The token ids GenAI needs besides the model: begin and end of sequence, padding.</summary>
public sealed record SpecialTokens(long Bos, IReadOnlyList<long> Eos, long Pad);

/// <summary>
/// The decoder's shape as ONNX Runtime GenAI needs it, read from the graph and its model map: the cache's
/// <c>past_key_values.%d.key</c> / <c>present.%d.key</c> pairs (one per layer), heads, KV heads and head size from the attention
/// sites (or the cache's fixed dimensions), the vocabulary and the longest sequence from <see cref="TokenLimits"/>.
/// </summary>
public sealed record DecoderShape(int Layers, long Heads, long KvHeads, long HeadSize, long Hidden, long Vocabulary, long ContextLength,
    bool HasPositionIds, bool UsesCustomOps, IReadOnlyList<string> Notes, bool SharesCache = false)
{
    public const string PastKey = "past_key_values.%d.key", PastValue = "past_key_values.%d.value";
    public const string PresentKey = "present.%d.key", PresentValue = "present.%d.value";

    /// <summary>The metadata key the prefix_tokens pass writes (its prefix token ids, comma-separated).</summary>
    public const string PrefixTokensKey = Quantc.Core.Verification.PrefixAlignment.Key;

    /// <summary>The shape of <paramref name="model"/>; <see cref="BadInputException"/> with the reason where GenAI cannot run it.
    /// <paramref name="contextHint"/> (e.g. config.json's max_position_embeddings) is used when the graph has no position table.</summary>
    public static DecoderShape Of(Model model, long? contextHint = null)
    {
        var g = model.Graph;
        var inputs = g.Inputs.Where(v => !v.IsInitializer).ToDictionary(v => v.Name, StringComparer.Ordinal);
        var outputs = g.Outputs.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        if (!inputs.ContainsKey("input_ids") || !outputs.Contains("logits"))
            throw new BadInputException("ONNX Runtime GenAI needs a decoder with an 'input_ids' input and a 'logits' output; this model " +
                $"has inputs {string.Join(", ", inputs.Keys)} and outputs {string.Join(", ", outputs)}");
        int layers = 0;
        while (inputs.ContainsKey(Name(PastKey, layers))) layers++;
        if (layers == 0)
            throw new BadInputException("ONNX Runtime GenAI runs decoders with a KV cache (inputs past_key_values.N.key/value, outputs " +
                "present.N.key/value); this model has none" + (LayerAnalysis.Analyze(g).Mambas.Count > 0
                    ? " (a Mamba state-space model: GenAI has no selective-scan decoder)" : ""));
        for (int i = 0; i < layers; i++)
            foreach (var (pattern, isInput) in new[] { (PastKey, true), (PastValue, true), (PresentKey, false), (PresentValue, false) })
                if (!(isInput ? inputs.ContainsKey(Name(pattern, i)) : outputs.Contains(Name(pattern, i))))
                    throw new BadInputException($"the KV cache of layer {i} has no {(isInput ? "input" : "output")} " +
                        $"'{Name(pattern, i)}': GenAI needs all four names per layer");
        var known = new HashSet<string>(StringComparer.Ordinal) { "input_ids", "attention_mask", "position_ids" };
        var unknown = inputs.Keys.Where(n => !known.Contains(n) && !n.StartsWith("past_key_values.", StringComparison.Ordinal)).ToList();
        if (unknown.Count > 0)
            throw new BadInputException($"ONNX Runtime GenAI would not feed the input(s) {string.Join(", ", unknown)}: it feeds " +
                $"input_ids, " +
                "attention_mask, position_ids and the KV cache only");
        if (!inputs.ContainsKey("attention_mask"))
            throw new BadInputException("ONNX Runtime GenAI's decoder needs an 'attention_mask' input; this model has none");
        var stored = KvStorage.Of(model.Metadata);
        foreach (var v in inputs.Values)
        {
            if (v.Name.StartsWith("past_key_values.", StringComparison.Ordinal) && v.ElementType is not (1 or 10)
                && !(stored.Contains(v.Name) && v.ElementType is 2 or 3))
                throw new BadInputException($"the KV cache input '{v.Name}' is of ONNX type {v.ElementType}: GenAI allocates float32 or " +
                    "float16 caches, or int8 / uint8 ones that GroupQueryAttention stores quantized (quantize_kv storage: native)");
            if (v.Shape is { Length: > 0 } s && s[0] is not null)
                throw new BadInputException($"input '{v.Name}' has a fixed batch dimension {s[0]}: GenAI needs it symbolic");
        }

        var map = LayerAnalysis.Analyze(g);
        var notes = new List<string>();
        var key0 = inputs[Name(PastKey, 0)].Shape;
        long? kvHeads = key0 is { Length: 4 } ks ? ks[1] : null, headSize = key0 is { Length: 4 } ks2 ? ks2[3] : null, heads = null;
        // A 4-bit stored cache holds two values per byte: its last axis is half the head size (GenAI's head_size is the whole).
        if (headSize is { } hs && stored.Contains(Name(PastKey, 0)) && stored.Bits(Name(PastKey, 0)) == 4) headSize = hs * 2;
        foreach (var site in map.Attention)
        {
            var n = site.Node;
            long? q = n.Is("GroupQueryAttention", "com.microsoft") || n.Is("MultiHeadAttention", "com.microsoft") ? n.GetInt("num_heads", 0)
                : n.Is("Attention") ? n.GetInt("q_num_heads", 0) : site.Decomposed?.QueryHeads;
            long? kv = n.Is("GroupQueryAttention", "com.microsoft") || n.Is("Attention") ? n.GetInt("kv_num_heads", 0)
                : site.Decomposed?.KvHeads;
            if (q is > 0) heads ??= q;
            if (kv is > 0) kvHeads ??= kv;
            headSize ??= site.HeadDim;
        }
        if (map.Attention.Count != layers)
            notes.Add($"the model map finds {map.Attention.Count} attention site(s) for {layers} cache layer(s)");
        if (kvHeads is null || headSize is null)
            throw new BadInputException("cannot tell the KV heads and head size: the cache inputs have symbolic dimensions 1 and 3 and " +
                "no " +
                "attention site of the model map names them");
        // Without a head count on the attention ops: the query projection's width over the head size, else the residual width's.
        long hidden = map.Norms.FirstOrDefault()?.HiddenSize ?? 0;
        heads ??= map.Linears.FirstOrDefault(l => l.Name.EndsWith("q_proj", StringComparison.Ordinal)) is { } qp
            && qp.OutFeatures % headSize.Value == 0 ? qp.OutFeatures / headSize.Value
            : hidden > 0 && hidden % headSize.Value == 0 ? hidden / headSize.Value
            : throw new BadInputException("cannot tell the number of query heads: no attention op names it, no q_proj layer and no " +
                "norm of the residual width");

        var limits = TokenLimits.Of(g);
        long vocab = limits.Vocabulary ?? throw new BadInputException("cannot tell the vocabulary size: no embedding table and no fixed " +
            "logits width");
        long context = limits.Positions ?? contextHint ?? throw new BadInputException("cannot tell the context length: no position table " +
            "or rotary cache indexed by position_ids, and no config.json with max_position_embeddings next to the model");
        // PrefixQuant's prefix (prefix_tokens) is in the cache ahead of every sequence and takes the first positions.
        if (model.Metadata.FirstOrDefault(kv => kv.Key == PrefixTokensKey).Value is { Length: > 0 } prefix)
        {
            int n = prefix.Split(',').Length;
            context -= n;
            notes.Add($"the model keeps {n} prefix tokens (prefix_tokens) in its KV cache ahead of the sequence, at the first " +
                $"positions: context_length is {context}; the prefix starts with BOS, so prompts go in without one (quantc generate " +
                "leaves it out)");
        }
        if (!stored.IsEmpty)
            notes.Add("the KV cache is stored as " +
                $"{(stored.Bits(Name(PastKey, 0)) == 8 ? "int8" : "uint8 with two 4-bit values per byte")} " +
                "(quantize_kv storage: native): the attention op quantizes new keys and values into it and reads them back itself");
        foreach (var (key, value) in model.Metadata)
            if (key is CacheTransforms.KeyKey or CacheTransforms.ValueKey or CacheTransforms.KeyScaleKey or CacheTransforms.ValueScaleKey)
                notes.Add($"the KV cache is transformed ({key}): GenAI feeds present.* back as past_key_values.* unchanged, which is " +
                    "what this model expects; only a tool that reads the cache itself sees the transformed basis");
        bool shares = SharedCache(g, map, layers, prefixed: model.Metadata.Any(kv => kv.Key == PrefixTokensKey), out var why);
        notes.Add(shares ? "the KV cache is one buffer of max_length rows per layer, past and present (past_present_share_buffer): " +
            "every attention is GroupQueryAttention or ai.quantc.CausalAttention on the cache inputs and outputs themselves"
            : $"past and present KV caches are separate buffers (no past_present_share_buffer): {why}");
        return new DecoderShape(layers, heads.Value, kvHeads.Value, headSize.Value, hidden > 0 ? hidden : heads.Value * headSize.Value,
            vocab, context, inputs.ContainsKey("position_ids"),
            CustomOps.IsUsedBy(model), notes, shares);
    }

    /// <summary>True where GenAI may bind one buffer of max_length rows as both past and present cache of every layer: each
    /// attention is com.microsoft GroupQueryAttention (ONNX Runtime's kernel takes such a buffer) or ai.quantc.CausalAttention
    /// with the attention_mask input (its fixed-capacity cache reads the valid length from the mask), reading the past graph
    /// inputs and writing the present graph outputs directly (no prefix or transform in between).</summary>
    private static bool SharedCache(Graph g, ModelMap map, int layers, bool prefixed, out string why)
    {
        why = "";
        if (prefixed) { why = "the model keeps a prefix in its cache ahead of the sequence"; return false; }
        if (map.Attention.Count != layers) { why = $"{map.Attention.Count} attention site(s) for {layers} cache layer(s)"; return false; }
        var graphInputs = g.Inputs.ToHashSet(ReferenceEqualityComparer.Instance);
        var graphOutputs = g.Outputs.ToHashSet(ReferenceEqualityComparer.Instance);
        foreach (var site in map.Attention)
        {
            var n = site.Node;
            bool gqa = n.Is("GroupQueryAttention", "com.microsoft"), causal = n.Is("CausalAttention", CustomOps.Domain);
            int past = gqa ? 3 : 4;
            if (!gqa && !causal) { why = $"{site.Name} is {n.OpType}, which reads a cache of exactly the past length"; return false; }
            bool direct = n.Inputs.Count > past + 1 && n.Inputs[past] is { } pk && graphInputs.Contains(pk)
                && n.Inputs[past + 1] is { } pv && graphInputs.Contains(pv)
                && n.Outputs.Count > 2 && n.Outputs[1] is { } ok && graphOutputs.Contains(ok)
                && n.Outputs[2] is { } ov && graphOutputs.Contains(ov);
            if (!direct)
            {
                why = $"{site.Name}'s cache is not read from and written to the graph's inputs and outputs directly";
                return false;
            }
            if (causal && n.Inputs[3]?.Name != "attention_mask")
            {
                why = $"{site.Name} has no attention_mask input (a fixed-capacity cache needs it)";
                return false;
            }
        }
        return true;
    }

    /// <summary>genai_config.json for the model file <paramref name="fileName"/> with these special tokens;
    /// <paramref name="customOpsLibrary"/> names the ai.quantc library (relative to the folder) when the model uses it.</summary>
    public JsonObject ToConfig(string fileName, SpecialTokens tokens, string? customOpsLibrary)
    {
        var session = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() };
        if (UsesCustomOps)
            session["custom_ops_library"] = customOpsLibrary ?? throw new InvalidOperationException("custom-op model without a library");
        var inputs = new JsonObject { ["input_ids"] = "input_ids", ["attention_mask"] = "attention_mask" };
        if (HasPositionIds) inputs["position_ids"] = "position_ids";
        inputs["past_key_names"] = PastKey;
        inputs["past_value_names"] = PastValue;
        var decoder = new JsonObject
        {
            ["session_options"] = session,
            ["filename"] = fileName,
            ["head_size"] = HeadSize,
            ["hidden_size"] = Hidden,
            ["inputs"] = inputs,
            ["outputs"] = new JsonObject
            {
                ["logits"] = "logits", ["present_key_names"] = PresentKey, ["present_value_names"] = PresentValue,
            },
            ["num_attention_heads"] = Heads,
            ["num_hidden_layers"] = Layers,
            ["num_key_value_heads"] = KvHeads,
        };
        var eos = tokens.Eos.Count == 1 ? (JsonNode)JsonValue.Create(tokens.Eos[0]) : new JsonArray(tokens.Eos.Select(e =>
            (JsonNode?)JsonValue.Create(e)).ToArray());
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = tokens.Bos,
                ["context_length"] = ContextLength,
                ["decoder"] = decoder,
                ["eos_token_id"] = eos,
                ["pad_token_id"] = tokens.Pad,
                // GenAI's decoder-only pipeline; "llama" also serves the other rotary decoders the model map recognises.
                ["type"] = "llama",
                ["vocab_size"] = Vocabulary,
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0, ["do_sample"] = false, ["early_stopping"] = true, ["length_penalty"] = 1.0,
                ["max_length"] = ContextLength, ["min_length"] = 0, ["no_repeat_ngram_size"] = 0, ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                // One buffer of max_length rows as past and present cache where every attention op takes it (SharesCache).
                ["past_present_share_buffer"] = SharesCache,
                ["repetition_penalty"] = 1.0, ["temperature"] = 1.0, ["top_k"] = 1, ["top_p"] = 1.0,
            },
        };
    }

    private static string Name(string pattern, int layer) => pattern.Replace("%d", layer.ToString(CultureInfo.InvariantCulture),
        StringComparison.Ordinal);
}
