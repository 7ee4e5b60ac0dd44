namespace Quantc.Models;

/// <summary>
/// Rotary-embedding frequency scaling as Hugging Face's config.json gives it: "linear" divides every
/// frequency by <see cref="Factor"/>; "llama3" (LLaMA 3.1+) divides only the low frequencies, keeps the
/// high ones and blends in between (low/high frequency factors over the original context length).
/// </summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor = 1, double HighFreqFactor = 4,
    int OriginalMaxPositions = 8192)
{
    /// <summary>The scaled inverse frequency.</summary>
    public double Apply(double invFreq)
    {
        if (Type == "linear") return invFreq / Factor;
        double lowWavelen = OriginalMaxPositions / LowFreqFactor, highWavelen = OriginalMaxPositions / HighFreqFactor;
        double wavelen = 2 * Math.PI / invFreq;
        if (wavelen < highWavelen) return invFreq;
        if (wavelen > lowWavelen) return invFreq / Factor;
        double smooth = (OriginalMaxPositions / wavelen - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
        return (1 - smooth) * invFreq / Factor + smooth * invFreq;
    }
}

/// <summary>Hyper-parameters of a LLaMA-family decoder (the fields of a Hugging Face config.json that matter here).</summary>
public sealed record LlamaConfig
{
    public int VocabSize { get; init; } = ByteVocab.Size;
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public int MaxPositions { get; init; } = 2048;
    public double RopeTheta { get; init; } = 10000.0;
    public float RmsNormEps { get; init; } = 1e-5f;

    /// <summary>Hugging Face's rope_scaling ("linear" or "llama3"), or null.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>Biases on q_proj, k_proj and v_proj (Qwen2).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>lm_head reads the input embedding transposed instead of a weight of its own (tie_word_embeddings).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Residual channels with outlier norm weights (SmoothQuant's channel outliers).</summary>
    public int OutlierChannels { get; init; } = 4;

    /// <summary>Parameter count (embedding, layers, final norm, lm_head).</summary>
    public long ParameterCount
    {
        get
        {
            long h = HiddenSize, kv = (long)NumKvHeads * HeadDim, q = (long)NumHeads * HeadDim;
            long layer = h * q + 2 * h * kv + q * h + 3 * h * IntermediateSize + 2 * h + (AttentionBias ? q + 2 * kv : 0);
            return (long)VocabSize * h * (TieWordEmbeddings ? 1 : 2) + NumLayers * layer + h;
        }
    }

    /// <summary>Checks that the numbers make a valid model.</summary>
    public void Validate()
    {
        if (HiddenSize <= 0 || IntermediateSize <= 0 || NumLayers <= 0 || NumHeads <= 0 || NumKvHeads <= 0 || HeadDim <= 0 ||
            VocabSize <= 0)
            throw new ArgumentException("llama config: sizes must be positive");
        if (NumHeads % NumKvHeads != 0)
            throw new ArgumentException($"llama config: {NumHeads} heads are not a multiple of {NumKvHeads} KV heads");
        if (HeadDim % 2 != 0) throw new ArgumentException("llama config: head_dim must be even (rotary embedding)");
    }

    /// <summary>The built-in sizes: tiny (unit tests), small (tens of millions of parameters), 1b (about a billion).</summary>
    public static LlamaConfig ForSize(string size, string arch)
    {
        var c = ForSize(size);
        // Qwen2: the LLaMA decoder with biases on q/k/v and (in its small models) the input embedding as lm_head.
        return arch == "qwen2" ? c with { AttentionBias = true, TieWordEmbeddings = true } : c;
    }

    /// <summary>The built-in LLaMA sizes: tiny (unit tests), small (tens of millions of parameters), 1b (about a billion).</summary>
    public static LlamaConfig ForSize(string size) => size switch
    {
        "tiny" => new LlamaConfig { HiddenSize = 128, IntermediateSize = 344, NumLayers = 4, NumHeads = 4, NumKvHeads = 2, HeadDim = 32,
            MaxPositions = 1024, OutlierChannels = 4 },
        "small" => new LlamaConfig { HiddenSize = 512, IntermediateSize = 1408, NumLayers = 8, NumHeads = 8, NumKvHeads = 2, HeadDim = 64,
            MaxPositions = 2048, OutlierChannels = 6 },
        "1b" => new LlamaConfig { HiddenSize = 2048, IntermediateSize = 5632, NumLayers = 22, NumHeads = 32, NumKvHeads = 4, HeadDim = 64,
            MaxPositions = 2048, OutlierChannels = 8 },
        _ => throw new ArgumentException($"unknown size '{size}' (tiny, small, 1b)"),
    };
}

/// <summary>The byte-level vocabulary of the reference models: ids 0–255 are bytes, 256 is BOS.</summary>
public static class ByteVocab
{
    public const int Size = 257;
    public const int Bos = 256;
    /// <summary>The delimiter token that, like BOS, triggers the massive activations ('\n').</summary>
    public const int Delimiter = (byte)'\n';
}
