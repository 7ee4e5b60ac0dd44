using System.Globalization;
using System.Text.Json;
using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>
/// Weights from a Hugging Face safetensors checkpoint, by HF tensor name. Linear weights
/// (<c>*proj.weight</c>, <c>fc1/fc2.weight</c>, <c>lm_head.weight</c>) are transposed from
/// [out, in] to the graph's [in, out]; fp16/bf16 become float32; an absent lm_head falls back
/// to the tied input embedding. Tensors are converted lazily, when the model is written.
/// </summary>
public sealed class CheckpointWeights(SafetensorsCheckpoint checkpoint, string tiedEmbedding) : IWeightSource
{
    public IReadOnlyList<KeyValuePair<string, string>> Metadata => [KeyValuePair.Create("quantc.weights", "checkpoint")];

    private static bool IsLinear(string name) =>
        name.EndsWith("proj.weight", StringComparison.Ordinal) || name.EndsWith(".fc1.weight", StringComparison.Ordinal) ||
        name.EndsWith(".fc2.weight", StringComparison.Ordinal) || name == "lm_head.weight";

    public Tensor Get(string name, long[] dims)
    {
        bool transpose = IsLinear(name);
        SafetensorsEntry e;
        if (name == "lm_head.weight" && !checkpoint.Tensors.ContainsKey(name) && checkpoint.Tensors.ContainsKey(tiedEmbedding))
            e = checkpoint.Get(tiedEmbedding);    // tie_word_embeddings: lm_head = embeddingᵀ, [vocab, hidden] like a linear's [out, in]
        else if (!checkpoint.Tensors.TryGetValue(name, out e!))
            throw new BadInputException($"{checkpoint.Path}: checkpoint has no tensor '{name}', which the config needs");
        long[] want = transpose ? [dims[1], dims[0]] : dims;
        if (!e.Shape.SequenceEqual(want))
            throw new BadInputException($"{checkpoint.Path}: tensor '{e.Name}' has shape [{string.Join(", ", e.Shape)}], the config " +
                $"needs [{string.Join(", ", want)}]");
        TensorData data = e.DType == SafetensorsDType.F32 && !transpose ? e.Data : new ConvertedTensorData(e, transpose);
        if (data.Length < (1 << 20)) data = TensorData.FromMemory(data.Span.ToArray());   // small tensors inline, like the writer would
        return Tensor.FromData(name, (int)DT.Float, dims, data);
    }
}

/// <summary>Hugging Face config.json → quantc configs.</summary>
public static class HfConfig
{
    private static JsonElement Load(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: config not found");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new BadInputException($"{path}: invalid JSON ({e.Message})", e); }
    }

    private static int Int(JsonElement j, string path, string key, int? fallback = null)
    {
        if (j.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        return fallback ?? throw new BadInputException($"{path}: config has no integer '{key}'");
    }

    private static double Num(JsonElement j, string key, double fallback) =>
        j.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : fallback;

    private static void CheckType(JsonElement j, string path, string expected)
    {
        if (j.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() != expected)
            throw new BadInputException($"{path}: model_type is '{t.GetString()}', not {expected}");
    }

    /// <summary>A LLaMA-family config.json: model_type llama, or qwen2 (biases on q/k/v; tie_word_embeddings as given).</summary>
    public static LlamaConfig Llama(string path, string modelType = "llama")
    {
        var j = Load(path);
        CheckType(j, path, modelType);
        int hidden = Int(j, path, "hidden_size"), heads = Int(j, path, "num_attention_heads");
        var c = new LlamaConfig
        {
            VocabSize = Int(j, path, "vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = Int(j, path, "intermediate_size"),
            NumLayers = Int(j, path, "num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = Int(j, path, "num_key_value_heads", heads),
            HeadDim = Int(j, path, "head_dim", hidden / heads),
            MaxPositions = Int(j, path, "max_position_embeddings", 2048),
            RopeTheta = Num(j, "rope_theta", 10000),
            RmsNormEps = (float)Num(j, "rms_norm_eps", 1e-5),
            RopeScaling = RopeScalingOf(j, path),
            AttentionBias = modelType == "qwen2",
            TieWordEmbeddings = modelType == "qwen2" && j.TryGetProperty("tie_word_embeddings", out var tie) &&
                tie.ValueKind == JsonValueKind.True,
        };
        try { c.Validate(); } catch (ArgumentException e) { throw new BadInputException($"{path}: {e.Message}", e); }
        return c;
    }

    private static RopeScaling? RopeScalingOf(JsonElement j, string path)
    {
        if (!j.TryGetProperty("rope_scaling", out var rs) || rs.ValueKind != JsonValueKind.Object) return null;
        string type = rs.TryGetProperty("rope_type", out var t) || rs.TryGetProperty("type", out t) ? t.GetString() ?? "" : "";
        double factor = rs.TryGetProperty("factor", out var f) && f.ValueKind == JsonValueKind.Number ? f.GetDouble() : 0;
        if (factor <= 0) throw new BadInputException($"{path}: rope_scaling needs a positive factor");
        return type switch
        {
            "linear" => new RopeScaling("linear", factor),
            "llama3" => new RopeScaling("llama3", factor,
                Num(rs, "low_freq_factor", 1), Num(rs, "high_freq_factor", 4), (int)Num(rs, "original_max_position_embeddings", 8192)),
            _ => throw new BadInputException($"{path}: rope_scaling type '{type}' is not supported (linear and llama3 are)"),
        };
    }

    public static MambaConfig Mamba(string path)
    {
        var j = Load(path);
        CheckType(j, path, "mamba");
        int hidden = Int(j, path, "hidden_size");
        int rank = j.TryGetProperty("time_step_rank", out var r) && r.ValueKind == JsonValueKind.Number ? r.GetInt32() : (hidden + 15) / 16;
        var c = new MambaConfig
        {
            VocabSize = Int(j, path, "vocab_size"),
            HiddenSize = hidden,
            NumLayers = Int(j, path, "num_hidden_layers"),
            StateSize = Int(j, path, "state_size", 16),
            ConvKernel = Int(j, path, "conv_kernel", 4),
            Expand = Int(j, path, "expand", 2),
            TimeStepRank = rank,
            RmsNormEps = (float)Num(j, "layer_norm_epsilon", 1e-5),
        };
        try { c.Validate(); } catch (ArgumentException e) { throw new BadInputException($"{path}: {e.Message}", e); }
        return c;
    }

    public static OptConfig Opt(string path)
    {
        var j = Load(path);
        CheckType(j, path, "opt");
        if (j.TryGetProperty("do_layer_norm_before", out var pre) && pre.ValueKind == JsonValueKind.False)
            throw new BadInputException($"{path}: post-LayerNorm OPT (opt-350m) is not supported");
        if (Int(j, path, "word_embed_proj_dim", Int(j, path, "hidden_size")) != Int(j, path, "hidden_size"))
            throw new BadInputException($"{path}: word_embed_proj_dim different from hidden_size is not supported");
        var c = new OptConfig
        {
            VocabSize = Int(j, path, "vocab_size"),
            HiddenSize = Int(j, path, "hidden_size"),
            FfnDim = Int(j, path, "ffn_dim"),
            NumLayers = Int(j, path, "num_hidden_layers"),
            NumHeads = Int(j, path, "num_attention_heads"),
            MaxPositions = Int(j, path, "max_position_embeddings", 2048),
        };
        try { c.Validate(); } catch (ArgumentException e) { throw new BadInputException($"{path}: {e.Message}", e); }
        return c;
    }
}

/// <summary>A model built over an open checkpoint; disposing it releases both.</summary>
public sealed class CheckpointModel(Model model, SafetensorsCheckpoint checkpoint) : IDisposable
{
    public Model Model { get; } = model;
    public SafetensorsCheckpoint Checkpoint { get; } = checkpoint;

    public void Dispose()
    {
        Model.Dispose();
        Checkpoint.Dispose();
    }
}
