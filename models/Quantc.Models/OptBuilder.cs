using System.Globalization;
using Quantc.Ir;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>Hyper-parameters of an OPT decoder (pre-LayerNorm, as OPT-125m and the larger ones except 350m).</summary>
public sealed record OptConfig
{
    public int VocabSize { get; init; } = ByteVocab.Size;
    public int HiddenSize { get; init; }
    public int FfnDim { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int MaxPositions { get; init; } = 2048;
    public float LayerNormEps { get; init; } = 1e-5f;
    /// <summary>Channels whose LayerNorm bias is shifted far from zero (OutlierTune's target).</summary>
    public int ShiftedChannels { get; init; } = 4;
    /// <summary>Channels whose LayerNorm weight is large (SmoothQuant's target).</summary>
    public int OutlierChannels { get; init; } = 4;

    public int HeadDim => HiddenSize / NumHeads;

    /// <summary>OPT's learned positions start at this offset.</summary>
    public const int PositionOffset = 2;

    public long ParameterCount
    {
        get
        {
            long h = HiddenSize, f = FfnDim;
            long layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h;
            return (long)VocabSize * h * 2 + (MaxPositions + PositionOffset) * h + NumLayers * layer + 2 * h;
        }
    }

    public void Validate()
    {
        if (HiddenSize <= 0 || FfnDim <= 0 || NumLayers <= 0 || NumHeads <= 0)
            throw new ArgumentException("opt config: sizes must be positive");
        if (HiddenSize % NumHeads != 0) throw new ArgumentException("opt config: hidden size must be a multiple of the head count");
    }

    public static OptConfig ForSize(string size) => size switch
    {
        "tiny" => new OptConfig { HiddenSize = 128, FfnDim = 512, NumLayers = 4, NumHeads = 4, MaxPositions = 1024 },
        "small" => new OptConfig { HiddenSize = 512, FfnDim = 2048, NumLayers = 8, NumHeads = 8, ShiftedChannels = 6, OutlierChannels = 6 },
        "1b" => new OptConfig { HiddenSize = 2048, FfnDim = 8192, NumLayers = 24, NumHeads = 32, ShiftedChannels = 8, OutlierChannels = 8 },
        _ => throw new ArgumentException($"unknown size '{size}' (tiny, small, 1b)"),
    };
}

/// <summary>
/// Seeded OPT weights with the activation structure OPT is known for: in the outputs of every
/// LayerNorm (the inputs of q/k/v and fc1) a few channels are <b>shifted</b> (LayerNorm bias of
/// ±6–10, so their mean sits far from zero with a small spread: asymmetric, OutlierTune's
/// target) and a few carry <b>outlier magnitudes</b> (LayerNorm weight 20–50: SmoothQuant's
/// target). The consuming projections compensate — rows of outlier channels are divided by the
/// weight, and the shift's contribution β·W is subtracted from the projection's bias — so the
/// network computes what an ordinary one would, while its activations look like OPT's.
/// </summary>
public sealed class SyntheticOptWeights : IWeightSource
{
    private readonly OptConfig _c;
    private readonly long _seed;
    private readonly long _materializeBytes;

    public SyntheticOptWeights(OptConfig c, long seed, long materializeBytes = (1L << 20) - 1)
    {
        _c = c;
        _seed = seed;
        _materializeBytes = materializeBytes;
        var rs = RandomStream.For(seed, "opt-outlier-plan");
        var perm = Enumerable.Range(0, c.HiddenSize).ToArray();
        for (int i = perm.Length - 1; i > 0; i--) { int j = rs.NextInt(i, i + 1); (perm[i], perm[j]) = (perm[j], perm[i]); }
        ShiftedChannels = perm.Take(c.ShiftedChannels).Order().ToArray();
        OutlierChannels = perm.Skip(c.ShiftedChannels).Take(c.OutlierChannels).Order().ToArray();
        var vs = rs.Derive("values");
        int k = 0;
        Shift = Enumerable.Range(0, c.NumLayers * 2).Select(_ =>
            ShiftedChannels.Select(_ => (float)((vs.Uniform(k++) < 0.5 ? -1 : 1) * (6 + 4 * vs.Uniform(k++)))).ToArray()).ToArray();
        Gamma = Enumerable.Range(0, c.NumLayers * 2).Select(_ =>
            OutlierChannels.Select(_ => (float)(20 + 30 * vs.Uniform(k++))).ToArray()).ToArray();
    }

    public int[] ShiftedChannels { get; }
    public int[] OutlierChannels { get; }
    /// <summary>LayerNorm bias of the shifted channels, per LayerNorm (2 per layer: attention, then MLP).</summary>
    public float[][] Shift { get; }
    /// <summary>LayerNorm weight of the outlier channels, per LayerNorm.</summary>
    public float[][] Gamma { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Metadata =>
    [
        KeyValuePair.Create("quantc.outliers.shifted_channels", string.Join(",", ShiftedChannels)),
        KeyValuePair.Create("quantc.outliers.channels", string.Join(",", OutlierChannels)),
    ];

    public Tensor Get(string name, long[] dims)
    {
        if (name.EndsWith("_proj.bias", StringComparison.Ordinal) && !name.Contains("out_proj", StringComparison.Ordinal) ||
            name.EndsWith("fc1.bias", StringComparison.Ordinal))
            return Tensor.FromFloats(name, dims, CompensatedBias(name, dims));
        return Generator(name, dims).ToTensor(name, dims, _materializeBytes);
    }

    private static int LayerOf(string name)
    {
        const string p = "model.decoder.layers.";
        int dot = name.IndexOf('.', p.Length);
        return int.Parse(name.AsSpan(p.Length, dot - p.Length), CultureInfo.InvariantCulture);
    }

    /// <summary>The generator of weight <paramref name="name"/> (biases of q/k/v/fc1 before compensation).</summary>
    public WeightGen Generator(string name, long[] dims)
    {
        var rs = RandomStream.For(_seed, name);
        long rows = dims.Length == 1 ? 1 : dims[0], cols = dims.Length == 1 ? dims[0] : dims[1];
        switch (name)
        {
            case "model.decoder.embed_tokens.weight": return new WeightGen(rs, rows, cols, 1.0);
            case "model.decoder.embed_positions.weight": return new WeightGen(rs, rows, cols, 0.5);
            case "model.decoder.final_layer_norm.weight": return new WeightGen(rs, 1, cols, 0.02, 1.0);
            case "model.decoder.final_layer_norm.bias": return new WeightGen(rs, 1, cols, 0.02);
            case "lm_head.weight": return new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
        }
        int layer = LayerOf(name);
        string part = name[(name.IndexOf('.', "model.decoder.layers.".Length) + 1)..];
        switch (part)
        {
            case "self_attn_layer_norm.weight":
            case "final_layer_norm.weight":
            {
                int i = part[0] == 's' ? 2 * layer : 2 * layer + 1;
                var g = new WeightGen(rs, 1, cols, 0.02, 1.0);
                for (int k = 0; k < OutlierChannels.Length; k++) g.ScaleCol(OutlierChannels[k], Gamma[i][k]);
                return g;
            }
            case "self_attn_layer_norm.bias":
            case "final_layer_norm.bias":
            {
                int i = part[0] == 's' ? 2 * layer : 2 * layer + 1;
                var g = new WeightGen(rs, 1, cols, 0.02);
                for (int k = 0; k < ShiftedChannels.Length; k++) g.Set(0, ShiftedChannels[k], Shift[i][k]);
                return g;
            }
            case "self_attn.q_proj.weight":
            case "self_attn.k_proj.weight":
            case "self_attn.v_proj.weight":
            case "fc1.weight":
            {
                var g = new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
                int i = part[0] == 's' ? 2 * layer : 2 * layer + 1;
                for (int k = 0; k < OutlierChannels.Length; k++) g.ScaleRow(OutlierChannels[k], 1f / Gamma[i][k]);
                // Shifted channels read with a smaller weight, so their offset does not dominate the output.
                foreach (int ch in ShiftedChannels) g.ScaleRow(ch, 0.25f);
                return g;
            }
            case "self_attn.out_proj.weight":
            case "fc2.weight":
                return new WeightGen(rs, rows, cols, 0.5 / Math.Sqrt(rows));
            case "self_attn.q_proj.bias":
            case "self_attn.k_proj.bias":
            case "self_attn.v_proj.bias":
            case "fc1.bias":
            case "self_attn.out_proj.bias":
            case "fc2.bias":
                return new WeightGen(rs, 1, cols, 0.02);
            default:
                throw new ArgumentException($"no synthetic weight '{name}'");
        }
    }

    /// <summary>bias − Σ_shifted β_c·W[c, :], so that the shift does not change what the projection computes.</summary>
    private float[] CompensatedBias(string name, long[] dims)
    {
        var bias = Generator(name, dims).ToArray();
        string weightName = name[..^"bias".Length] + "weight";
        int layer = LayerOf(name);
        int i = name.Contains(".fc1.", StringComparison.Ordinal) ? 2 * layer + 1 : 2 * layer;
        var w = Generator(weightName, [_c.HiddenSize, dims[0]]);
        var row = new float[dims[0]];
        for (int k = 0; k < ShiftedChannels.Length; k++)
        {
            w.Fill((long)ShiftedChannels[k] * dims[0], row);
            for (int j = 0; j < row.Length; j++) bias[j] -= Shift[i][k] * row[j];
        }
        return bias;
    }
}

/// <summary>
/// Builds an OPT decoder in one of two flavors:
/// <list type="bullet">
/// <item><c>torch</c> — the shape of a torch.onnx export: token and learned position embeddings
/// (positions from the attention mask, offset 2, as HF's OPTLearnedPositionalEmbedding), pre-LayerNorm
/// blocks with LayerNormalization (weight and bias), biased q/k/v/out projections as MatMul + Add,
/// eager multi-head attention with the same causal+padding mask as the LLaMA builder, a ReLU MLP
/// (fc1, fc2), a final LayerNorm and lm_head.</item>
/// <item><c>fused</c> — the shape ONNX Runtime's transformer optimizer gives such a decoder: every
/// residual add + LayerNorm is one com.microsoft SkipLayerNormalization that also takes the bias of
/// the projection before it (out_proj, fc2), so those are bare MatMuls; attention is com.microsoft
/// MultiHeadAttention over the q/k/v projections with past_key/past_value in and present_key/present_value
/// out and the additive causal+padding mask as its attention_bias; the embedding sum stays an Add
/// followed by LayerNormalization.</item>
/// </list>
/// Both flavors compute the same function over the same weights. KV cache in the optimum convention.
/// </summary>
public static class OptBuilder
{
    /// <summary>Builds the graph of <paramref name="c"/> over <paramref name="w"/>.</summary>
    public static Model Build(OptConfig c, IWeightSource w, string flavor = "torch")
    {
        c.Validate();
        bool fused = flavor switch
        {
            "torch" => false,
            "fused" => true,
            _ => throw new ArgumentException($"unknown flavor '{flavor}' for opt (torch, fused)"),
        };
        var model = Model.Create("main_graph", 18, irVersion: 8);
        if (fused) model.SetOpset("com.microsoft", 1);
        model.ProducerName = fused ? "quantc (onnxruntime transformers-optimizer shape)" : "quantc (torch.onnx shape)";
        model.ProducerVersion = "models-" + LlamaBuilder.FormatVersion;
        var b = new OnnxBuilder(model.Graph);
        Value W(string name, params long[] dims) => b.Graph.AddInitializer(w.Get(name, dims), name);
        long h = c.HiddenSize;
        int hd = c.HeadDim;

        var ids = b.Input("input_ids", DT.Int64, "batch_size", "sequence_length");
        var mask = b.Input("attention_mask", DT.Int64, "batch_size", "total_sequence_length");
        var past = new List<(Value K, Value V)>();
        for (int i = 0; i < c.NumLayers; i++)
            past.Add((b.Input($"past_key_values.{i}.key", DT.Float, "batch_size", c.NumHeads, "past_sequence_length", hd),
                      b.Input($"past_key_values.{i}.value", DT.Float, "batch_size", c.NumHeads, "past_sequence_length", hd)));

        Value x, addMask;
        var embed = W("model.decoder.embed_tokens.weight", c.VocabSize, h);
        var posTable = W("model.decoder.embed_positions.weight", c.MaxPositions + OptConfig.PositionOffset, h);
        using (b.Enter("/model/decoder/embed_tokens"))
            x = b.Op("Gather", [embed, ids], n => n.SetAttribute("axis", 0L));
        Value seqLen, totalLen, pastLen;
        using (b.Enter("/model/decoder"))
        {
            seqLen = b.Op("Gather", [b.Op("Shape", ids), b.I64([1], scalar: true)], n => n.SetAttribute("axis", 0L));
            totalLen = b.Op("Gather", [b.Op("Shape", mask), b.I64([1], scalar: true)], n => n.SetAttribute("axis", 0L));
            pastLen = b.Op("Sub", totalLen, seqLen);
            var rows = b.Op("Unsqueeze", b.Op("Range", pastLen, totalLen, b.I64([1], scalar: true)), b.Ints(1));
            var cols = b.Op("Range", b.I64([0], scalar: true), totalLen, b.I64([1], scalar: true));
            var keep = b.Op("Unsqueeze", b.Op("Cast", [mask], n => n.SetAttribute("to", (long)DT.Bool)), b.Ints(1, 2));
            var allowed = b.Op("And", b.Op("LessOrEqual", cols, rows), keep);
            addMask = b.Op("Where", allowed, b.F32(0f), b.F32(float.MinValue));
        }
        using (b.Enter("/model/decoder/embed_positions"))
        {
            // positions = cumsum(mask)·mask − 1, the last seq_len of them, + offset 2.
            var cum = b.Op("CumSum", mask, b.I64([1], scalar: true));
            var pos = b.Op("Sub", b.Op("Mul", cum, mask), b.I64([1], scalar: true));
            pos = b.Op("Slice", pos, b.Op("Unsqueeze", pastLen, b.Ints(0)), b.Ints(long.MaxValue), b.Ints(1));
            pos = b.Op("Add", pos, b.I64([OptConfig.PositionOffset], scalar: true));
            var pe = b.Op("Gather", [posTable, pos], n => n.SetAttribute("axis", 0L));
            using (b.Enter("/model/decoder")) x = b.Op("Add", x, pe);
        }

        Value LayerNorm(string scope, Value input, string wname)
        {
            var g = W(wname + ".weight", h);
            var be = W(wname + ".bias", h);
            using (b.Enter(scope))
                return b.Op("LayerNormalization", [input, g, be], n =>
                {
                    n.SetAttribute("axis", -1L);
                    n.SetAttribute("epsilon", c.LayerNormEps);
                });
        }
        Value MatMul(string scope, string wname, Value input, long inDim, long outDim)
        {
            var wt = W(wname + ".weight", inDim, outDim);
            using (b.Enter(scope)) return b.Op("MatMul", input, wt);
        }
        Value Linear(string scope, string wname, Value input, long inDim, long outDim)
        {
            var mm = MatMul(scope, wname, input, inDim, outDim);
            var bias = W(wname + ".bias", outDim);
            using (b.Enter(scope)) return b.Op("Add", bias, mm);
        }
        // SkipLayerNormalization(input, skip, γ, β, bias) → (LN(input + skip + bias)·γ + β, input + skip + bias).
        (Value Normed, Value? Sum) SkipLayerNorm(string scope, Value input, Value skip, string normName, string biasName, bool wantSum)
        {
            var g = W(normName + ".weight", h);
            var be = W(normName + ".bias", h);
            var bias = W(biasName, h);
            using (b.Enter(scope))
            {
                var n = b.AddNode("SkipLayerNormalization", [input, skip, g, be, bias], 4, "com.microsoft", "SkipLayerNorm",
                    keep: wantSum ? [0, 3] : [0]);
                n.SetAttribute("epsilon", c.LayerNormEps);
                return (n.Outputs[0]!, wantSum ? n.Outputs[3]! : null);
            }
        }

        var present = new List<(Value, Value)>();
        Value a = fused ? LayerNorm("/model/decoder/layers.0/self_attn_layer_norm", x, "model.decoder.layers.0.self_attn_layer_norm") : x;
        for (int i = 0; i < c.NumLayers; i++)
        {
            string ls = $"/model/decoder/layers.{i}", wp = $"model.decoder.layers.{i}.";
            if (!fused) a = LayerNorm($"{ls}/self_attn_layer_norm", x, wp + "self_attn_layer_norm");
            var q = Linear($"{ls}/self_attn/q_proj", wp + "self_attn.q_proj", a, h, h);
            var k = Linear($"{ls}/self_attn/k_proj", wp + "self_attn.k_proj", a, h, h);
            var v = Linear($"{ls}/self_attn/v_proj", wp + "self_attn.v_proj", a, h, h);
            Value o;
            if (fused)
            {
                using (b.Enter($"{ls}/self_attn/MultiHeadAttention"))
                {
                    var mha = b.AddNode("MultiHeadAttention", [q, k, v, null, null, addMask, past[i].K, past[i].V], 3, "com.microsoft",
                        "MultiHeadAttention");
                    mha.SetAttribute("num_heads", (long)c.NumHeads);
                    mha.SetAttribute("scale", (float)(1.0 / Math.Sqrt(hd)));
                    present.Add((mha.Outputs[1]!, mha.Outputs[2]!));
                    o = mha.Outputs[0]!;
                }
                o = MatMul($"{ls}/self_attn/out_proj", wp + "self_attn.out_proj", o, h, h);
                Value? sum;
                (var f, sum) = SkipLayerNorm($"{ls}/final_layer_norm", o, x, wp + "final_layer_norm", wp + "self_attn.out_proj.bias",
                    wantSum: true);
                x = sum!;
                f = Linear($"{ls}/fc1", wp + "fc1", f, h, c.FfnDim);
                using (b.Enter($"{ls}/activation_fn")) f = b.Op("Relu", f);
                f = MatMul($"{ls}/fc2", wp + "fc2", f, c.FfnDim, h);
                bool last = i == c.NumLayers - 1;
                (a, sum) = last
                    ? SkipLayerNorm("/model/decoder/final_layer_norm", f, x, "model.decoder.final_layer_norm", wp + "fc2.bias",
                        wantSum: false)
                    : SkipLayerNorm($"/model/decoder/layers.{i + 1}/self_attn_layer_norm", f, x,
                        $"model.decoder.layers.{i + 1}.self_attn_layer_norm", wp + "fc2.bias", wantSum: true);
                if (sum is not null) x = sum;
                continue;
            }
            using (b.Enter($"{ls}/self_attn"))
            {
                Value Heads(Value t) =>
                    b.Op("Transpose", [b.Op("Reshape", t, b.Ints(0, 0, c.NumHeads, hd))], n => n.SetAttribute("perm", [0L, 2, 1, 3]));
                q = b.Op("Mul", q, b.F32((float)(1.0 / Math.Sqrt(hd))));
                var pk = b.Op("Concat", [past[i].K, Heads(k)], n => n.SetAttribute("axis", 2L));
                var pv = b.Op("Concat", [past[i].V, Heads(v)], n => n.SetAttribute("axis", 2L));
                present.Add((pk, pv));
                var kt = b.Op("Transpose", [pk], n => n.SetAttribute("perm", [0L, 1, 3, 2]));
                var probs = b.Op("Softmax", [b.Op("Add", b.Op("MatMul", Heads(q), kt), addMask)], n => n.SetAttribute("axis", -1L));
                var ctx = b.Op("Transpose", [b.Op("MatMul", probs, pv)], n => n.SetAttribute("perm", [0L, 2, 1, 3]));
                o = b.Op("Reshape", ctx, b.Ints(0, 0, h));
            }
            o = Linear($"{ls}/self_attn/out_proj", wp + "self_attn.out_proj", o, h, h);
            using (b.Enter(ls)) x = b.Op("Add", x, o);
            var ff = LayerNorm($"{ls}/final_layer_norm", x, wp + "final_layer_norm");
            ff = Linear($"{ls}/fc1", wp + "fc1", ff, h, c.FfnDim);
            using (b.Enter($"{ls}/activation_fn")) ff = b.Op("Relu", ff);
            ff = Linear($"{ls}/fc2", wp + "fc2", ff, c.FfnDim, h);
            using (b.Enter(ls)) x = b.Op("Add", x, ff);
        }
        if (!fused) a = LayerNorm("/model/decoder/final_layer_norm", x, "model.decoder.final_layer_norm");
        var head = W("lm_head.weight", h, c.VocabSize);
        Value logits;
        using (b.Enter("/lm_head")) logits = b.Op("MatMul", a, head);
        b.Output(logits, "logits", DT.Float, "batch_size", "sequence_length", c.VocabSize);
        for (int i = 0; i < c.NumLayers; i++)
        {
            b.Output(present[i].Item1, $"present.{i}.key", DT.Float, "batch_size", c.NumHeads, "total_sequence_length", hd);
            b.Output(present[i].Item2, $"present.{i}.value", DT.Float, "batch_size", c.NumHeads, "total_sequence_length", hd);
        }
        model.SetMetadata("quantc.arch", "opt");
        model.SetMetadata("quantc.flavor", flavor);
        model.SetMetadata("quantc.tokenizer", c.VocabSize == ByteVocab.Size ? "byte" : "none");
        model.SetMetadata("quantc.config", string.Create(CultureInfo.InvariantCulture,
            $"{{\"model_type\":\"opt\",\"vocab_size\":{c.VocabSize},\"hidden_size\":{c.HiddenSize},\"ffn_dim\":{c.FfnDim}," +
            $"\"num_hidden_layers\":{c.NumLayers},\"num_attention_heads\":{c.NumHeads}," +
            $"\"max_position_embeddings\":{c.MaxPositions},\"do_layer_norm_before\":true}}"));
        foreach (var kv in w.Metadata) model.SetMetadata(kv.Key, kv.Value);
        model.Graph.Validate();
        return model;
    }
}
