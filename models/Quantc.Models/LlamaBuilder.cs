using System.Globalization;
using Quantc.Ir;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>
/// Builds a LLaMA-family decoder as an ONNX graph, in one of two flavors:
/// <list type="bullet">
/// <item><c>torch</c> — the op-by-op shape of a torch.onnx (TorchScript, optimum) export:
/// decomposed RMSNorm (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul/Mul), MatMul with pre-transposed
/// [in, out] weights, rotary embedding with cos/sin caches gathered by position_ids and
/// rotate-half as Slice/Neg/Concat, repeat-kv as Unsqueeze/Expand/Reshape, eager attention
/// (MatMul/Mul/Add mask/Softmax/MatMul) and SwiGLU as Sigmoid/Mul.</item>
/// <item><c>ortgenai</c> — the fused shape ONNX Runtime GenAI's model builder emits:
/// SimplifiedLayerNormalization, com.microsoft SkipSimplifiedLayerNormalization, RotaryEmbedding
/// and GroupQueryAttention.</item>
/// </list>
/// Both take <c>input_ids</c>, <c>attention_mask</c>, <c>position_ids</c> and
/// <c>past_key_values.{i}.key|value</c> [batch, kv_heads, past, head_dim] and return
/// <c>logits</c> and <c>present.{i}.key|value</c> (the optimum convention).
/// </summary>
public static class LlamaBuilder
{
    /// <summary>Version of the builder's output; bump when the graph or the weights change.</summary>
    public const string FormatVersion = "1";

    /// <summary>Builds the graph of <paramref name="c"/> over <paramref name="weights"/>.</summary>
    public static Model Build(LlamaConfig c, IWeightSource weights, string flavor = "torch")
    {
        c.Validate();
        bool genai = flavor switch
        {
            "torch" => false,
            "ortgenai" => true,
            _ => throw new ArgumentException($"unknown flavor '{flavor}' (torch, ortgenai)"),
        };
        var model = Model.Create("main_graph", genai ? 21 : 18, irVersion: genai ? 10 : 8);
        if (genai) model.SetOpset("com.microsoft", 1);
        model.ProducerName = genai ? "quantc (onnxruntime-genai shape)" : "quantc (torch.onnx shape)";
        model.ProducerVersion = "models-" + FormatVersion;
        var b = new OnnxBuilder(model.Graph);
        var g = new LlamaGraph(c, weights, b);
        if (genai) g.BuildGenAi(); else g.BuildTorch();

        model.SetMetadata("quantc.arch", "llama");
        model.SetMetadata("quantc.flavor", flavor);
        model.SetMetadata("quantc.tokenizer", c.VocabSize == ByteVocab.Size ? "byte" : "none");
        model.SetMetadata("quantc.config", ConfigJson(c));
        foreach (var kv in weights.Metadata) model.SetMetadata(kv.Key, kv.Value);
        model.Graph.Validate();
        return model;
    }

    /// <summary>The config as Hugging Face config.json fields.</summary>
    public static string ConfigJson(LlamaConfig c) => string.Create(CultureInfo.InvariantCulture,
        $"{{\"model_type\":\"llama\",\"vocab_size\":{c.VocabSize},\"hidden_size\":{c.HiddenSize}," +
        $"\"intermediate_size\":{c.IntermediateSize},\"num_hidden_layers\":{c.NumLayers},\"num_attention_heads\":{c.NumHeads}," +
        $"\"num_key_value_heads\":{c.NumKvHeads},\"head_dim\":{c.HeadDim},\"max_position_embeddings\":{c.MaxPositions}," +
        $"\"rope_theta\":{c.RopeTheta:R},\"rms_norm_eps\":{c.RmsNormEps:R}}}");

    /// <summary>
    /// Rotary caches [max_positions, width]: cos/sin of position·θ^(−2i/head_dim); <paramref name="duplicate"/>
    /// repeats the half-width table (the torch layout, cat(freqs, freqs)), else it is half width (com.microsoft's).
    /// </summary>
    public static (float[] Cos, float[] Sin, int Width) RotaryCaches(LlamaConfig c, bool duplicate)
    {
        int half = c.HeadDim / 2, width = duplicate ? c.HeadDim : half;
        var cos = new float[c.MaxPositions * width];
        var sin = new float[c.MaxPositions * width];
        var invFreq = new double[half];
        for (int i = 0; i < half; i++)
        {
            invFreq[i] = 1.0 / DetMath.Pow(c.RopeTheta, 2.0 * i / c.HeadDim);
            if (c.RopeScaling is { } rs) invFreq[i] = rs.Apply(invFreq[i]);
        }
        for (int p = 0; p < c.MaxPositions; p++)
            for (int i = 0; i < half; i++)
            {
                // torch computes the angle in float32: position (float) × inv_freq (float).
                float angle = (float)p * (float)invFreq[i];
                DetMath.SinCos(angle, out double s, out double co);
                cos[p * width + i] = (float)co;
                sin[p * width + i] = (float)s;
                if (duplicate) { cos[p * width + half + i] = (float)co; sin[p * width + half + i] = (float)s; }
            }
        return (cos, sin, width);
    }

    private sealed class LlamaGraph(LlamaConfig c, IWeightSource w, OnnxBuilder b)
    {
        private Value _inputIds = null!, _attentionMask = null!, _positionIds = null!;
        private readonly List<(Value Key, Value Value)> _past = [];

        private Value Weight(string name, params long[] dims) => b.Graph.AddInitializer(w.Get(name, dims), name);

        private void Inputs()
        {
            _inputIds = b.Input("input_ids", DT.Int64, "batch_size", "sequence_length");
            _attentionMask = b.Input("attention_mask", DT.Int64, "batch_size", "total_sequence_length");
            _positionIds = b.Input("position_ids", DT.Int64, "batch_size", "sequence_length");
            for (int i = 0; i < c.NumLayers; i++)
            {
                var k = b.Input($"past_key_values.{i}.key", DT.Float, "batch_size", c.NumKvHeads, "past_sequence_length", c.HeadDim);
                var v = b.Input($"past_key_values.{i}.value", DT.Float, "batch_size", c.NumKvHeads, "past_sequence_length", c.HeadDim);
                _past.Add((k, v));
            }
        }

        private Value Embedding()
        {
            _embedTable = Weight("model.embed_tokens.weight", c.VocabSize, c.HiddenSize);
            using (b.Enter("/model/embed_tokens"))
                return b.Op("Gather", [_embedTable, _inputIds], n => n.SetAttribute("axis", 0L));
        }

        private Value? _embedTable;

        /// <summary>The logits: x·W_lm, or with tied embeddings x·Eᵀ — the embedding read through a Transpose, as torch exports a tied
        /// head.</summary>
        private Value LmHead(Value x)
        {
            using (b.Enter("/lm_head"))
            {
                if (!c.TieWordEmbeddings) return b.Op("MatMul", x, Weight("lm_head.weight", c.HiddenSize, c.VocabSize));
                var t = b.Op("Transpose", [_embedTable!], n => n.SetAttribute("perm", new long[] { 1, 0 }));
                return b.Op("MatMul", x, t);
            }
        }

        private void Outputs(Value logits, List<(Value Key, Value Value)> present)
        {
            b.Output(logits, "logits", DT.Float, "batch_size", "sequence_length", c.VocabSize);
            for (int i = 0; i < c.NumLayers; i++)
            {
                b.Output(present[i].Key, $"present.{i}.key", DT.Float, "batch_size", c.NumKvHeads, "total_sequence_length", c.HeadDim);
                b.Output(present[i].Value, $"present.{i}.value", DT.Float, "batch_size", c.NumKvHeads, "total_sequence_length", c.HeadDim);
            }
        }

        private Value Linear(string scope, string weightName, Value x, long inDim, long outDim, bool bias = false)
        {
            var wt = Weight(weightName, inDim, outDim);
            using (b.Enter(scope))
            {
                var y = b.Op("MatMul", x, wt);
                if (!bias) return y;
                return b.Op("Add", y, Weight(weightName[..^"weight".Length] + "bias", outDim));
            }
        }

        // ------------------------------------------------------------------ torch flavor

        public void BuildTorch()
        {
            Inputs();
            Value h = Embedding();
            Value mask, cos, sin;
            using (b.Enter("/model"))
            {
                // Additive causal + padding mask [batch, 1, seq, total]: 0 where allowed, finfo(float32).min elsewhere.
                var seqLen = b.Op("Gather", [b.Op("Shape", _inputIds), b.I64([1], scalar: true)], n => n.SetAttribute("axis", 0L));
                var totalLen = b.Op("Gather", [b.Op("Shape", _attentionMask), b.I64([1], scalar: true)], n => n.SetAttribute("axis", 0L));
                var pastLen = b.Op("Sub", totalLen, seqLen);
                var rows = b.Op("Unsqueeze", b.Op("Range", pastLen, totalLen, b.I64([1], scalar: true)), b.Ints(1));
                var cols = b.Op("Range", b.I64([0], scalar: true), totalLen, b.I64([1], scalar: true));
                var causal = b.Op("LessOrEqual", cols, rows);
                var keep = b.Op("Unsqueeze", b.Op("Cast", [_attentionMask], n => n.SetAttribute("to", (long)DT.Bool)), b.Ints(1, 2));
                var allowed = b.Op("And", causal, keep);
                mask = b.Op("Where", allowed, b.F32(0f), b.F32(float.MinValue));
            }
            var (cosT, sinT, width) = RotaryCaches(c, duplicate: true);
            var cosCache = b.Graph.AddInitializer(Tensor.FromFloats("model.rotary_emb.cos_cached", [c.MaxPositions, width], cosT),
                "model.rotary_emb.cos_cached");
            var sinCache = b.Graph.AddInitializer(Tensor.FromFloats("model.rotary_emb.sin_cached", [c.MaxPositions, width], sinT),
                "model.rotary_emb.sin_cached");
            using (b.Enter("/model/rotary_emb"))
            {
                cos = b.Op("Unsqueeze", b.Op("Gather", [cosCache, _positionIds], n => n.SetAttribute("axis", 0L)), b.Ints(1));
                sin = b.Op("Unsqueeze", b.Op("Gather", [sinCache, _positionIds], n => n.SetAttribute("axis", 0L)), b.Ints(1));
            }

            var present = new List<(Value, Value)>();
            for (int i = 0; i < c.NumLayers; i++)
            {
                string ls = $"/model/layers.{i}", wp = $"model.layers.{i}.";
                var x = RmsNorm($"{ls}/input_layernorm", h, Weight(wp + "input_layernorm.weight", c.HiddenSize));
                var (attn, pk, pv) = TorchAttention(i, x, mask, cos, sin);
                present.Add((pk, pv));
                using (b.Enter(ls)) h = b.Op("Add", h, attn);
                x = RmsNorm($"{ls}/post_attention_layernorm", h, Weight(wp + "post_attention_layernorm.weight", c.HiddenSize));
                var mlp = Mlp(i, x);
                using (b.Enter(ls)) h = b.Op("Add", h, mlp);
            }
            h = RmsNorm("/model/norm", h, Weight("model.norm.weight", c.HiddenSize));
            Outputs(LmHead(h), present);
        }

        private Value RmsNorm(string scope, Value x, Value weight)
        {
            using (b.Enter(scope))
            {
                var sq = b.Op("Pow", x, b.F32(2f));
                var mean = b.Op("ReduceMean", [sq, b.Ints(-1)], n => n.SetAttribute("keepdims", 1L));
                var rstd = b.Op("Reciprocal", b.Op("Sqrt", b.Op("Add", mean, b.F32(c.RmsNormEps))));
                return b.Op("Mul", weight, b.Op("Mul", x, rstd));
            }
        }

        private (Value Out, Value PresentKey, Value PresentValue) TorchAttention(int i, Value x, Value mask, Value cos, Value sin)
        {
            string s = $"/model/layers.{i}/self_attn", wp = $"model.layers.{i}.self_attn.";
            long h = c.HiddenSize, qd = (long)c.NumHeads * c.HeadDim, kvd = (long)c.NumKvHeads * c.HeadDim;
            var q = Linear($"{s}/q_proj", wp + "q_proj.weight", x, h, qd, c.AttentionBias);
            var k = Linear($"{s}/k_proj", wp + "k_proj.weight", x, h, kvd, c.AttentionBias);
            var v = Linear($"{s}/v_proj", wp + "v_proj.weight", x, h, kvd, c.AttentionBias);
            using (b.Enter(s))
            {
                Value Heads(Value t, int heads) =>
                    b.Op("Transpose", [b.Op("Reshape", t, b.Ints(0, 0, heads, c.HeadDim))], n => n.SetAttribute("perm", [0L, 2, 1, 3]));
                q = Rotary(Heads(q, c.NumHeads), cos, sin);
                k = Rotary(Heads(k, c.NumKvHeads), cos, sin);
                v = Heads(v, c.NumKvHeads);
                var presentK = b.Op("Concat", [_past[i].Key, k], n => n.SetAttribute("axis", 2L));
                var presentV = b.Op("Concat", [_past[i].Value, v], n => n.SetAttribute("axis", 2L));
                var kr = RepeatKv(presentK);
                var vr = RepeatKv(presentV);
                var kt = b.Op("Transpose", [kr], n => n.SetAttribute("perm", [0L, 1, 3, 2]));
                var scores = b.Op("Mul", b.Op("MatMul", q, kt), b.F32((float)(1.0 / Math.Sqrt(c.HeadDim))));
                var probs = b.Op("Softmax", [b.Op("Add", scores, mask)], n => n.SetAttribute("axis", -1L));
                var ctx = b.Op("MatMul", probs, vr);
                ctx = b.Op("Transpose", [ctx], n => n.SetAttribute("perm", [0L, 2, 1, 3]));
                ctx = b.Op("Reshape", ctx, b.Ints(0, 0, qd));
                var o = Linear($"{s}/o_proj", wp + "o_proj.weight", ctx, qd, h);
                return (o, presentK, presentV);
            }
        }

        /// <summary>x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x[..., d/2:], x[..., :d/2]).</summary>
        private Value Rotary(Value x, Value cos, Value sin)
        {
            int half = c.HeadDim / 2;
            var x1 = b.Op("Slice", x, b.Ints(0), b.Ints(half), b.Ints(3), b.Ints(1));
            var x2 = b.Op("Slice", x, b.Ints(half), b.Ints(long.MaxValue), b.Ints(3), b.Ints(1));
            var rot = b.Op("Concat", [b.Op("Neg", x2), x1], n => n.SetAttribute("axis", -1L));
            return b.Op("Add", b.Op("Mul", x, cos), b.Op("Mul", rot, sin));
        }

        /// <summary>[b, kv, t, d] → [b, kv·rep, t, d] as HF's repeat_kv exports: Unsqueeze, Expand, Reshape.</summary>
        private Value RepeatKv(Value x)
        {
            int rep = c.NumHeads / c.NumKvHeads;
            if (rep == 1) return x;
            var u = b.Op("Unsqueeze", x, b.Ints(2));
            var e = b.Op("Expand", u, b.Ints(1, 1, rep, 1, 1));
            return b.Op("Reshape", e, b.Ints(0, c.NumHeads, -1, c.HeadDim));
        }

        private Value Mlp(int i, Value x)
        {
            string s = $"/model/layers.{i}/mlp", wp = $"model.layers.{i}.mlp.";
            long h = c.HiddenSize, m = c.IntermediateSize;
            var gate = Linear($"{s}/gate_proj", wp + "gate_proj.weight", x, h, m);
            Value act;
            using (b.Enter($"{s}/act_fn")) act = b.Op("Mul", gate, b.Op("Sigmoid", gate));
            var up = Linear($"{s}/up_proj", wp + "up_proj.weight", x, h, m);
            Value prod;
            using (b.Enter(s)) prod = b.Op("Mul", act, up);
            return Linear($"{s}/down_proj", wp + "down_proj.weight", prod, m, h);
        }

        // ------------------------------------------------------------------ ortgenai flavor

        public void BuildGenAi()
        {
            Inputs();
            Value h = Embedding();
            Value seqlensK, totalLen;
            using (b.Enter("/model/attn_mask_reformat/attn_mask_subgraph"))
            {
                var sum = b.Op("ReduceSum", [_attentionMask, b.Ints(1)], n => n.SetAttribute("keepdims", 0L));
                seqlensK = b.Op("Cast", [b.Op("Sub", sum, b.I64([1], scalar: true))], n => n.SetAttribute("to", (long)DT.Int32));
                var total = b.Op("Gather", [b.Op("Shape", _attentionMask), b.I64([1], scalar: true)], n => n.SetAttribute("axis", 0L));
                totalLen = b.Op("Cast", [total], n => n.SetAttribute("to", (long)DT.Int32));
            }
            var (cosT, sinT, width) = RotaryCaches(c, duplicate: false);
            var cosCache = b.Graph.AddInitializer(Tensor.FromFloats("cos_cache", [c.MaxPositions, width], cosT), "cos_cache");
            var sinCache = b.Graph.AddInitializer(Tensor.FromFloats("sin_cache", [c.MaxPositions, width], sinT), "sin_cache");

            var present = new List<(Value, Value)>();
            Value x;
            using (b.Enter("/model/layers.0/input_layernorm"))
                x = b.Op("SimplifiedLayerNormalization", [h, Weight("model.layers.0.input_layernorm.weight", c.HiddenSize)], n =>
                {
                    n.SetAttribute("axis", -1L);
                    n.SetAttribute("epsilon", c.RmsNormEps);
                    n.SetAttribute("stash_type", 1L);
                }, domain: "");
            for (int i = 0; i < c.NumLayers; i++)
            {
                string ls = $"/model/layers.{i}", wp = $"model.layers.{i}.";
                var (attn, pk, pv) = GenAiAttention(i, x, seqlensK, totalLen, cosCache, sinCache);
                present.Add((pk, pv));
                (x, h) = SkipNorm($"{ls}/post_attention_layernorm", attn, h, Weight(wp + "post_attention_layernorm.weight", c.HiddenSize));
                var mlp = Mlp(i, x);
                bool last = i == c.NumLayers - 1;
                var nextW = last ? Weight("model.norm.weight", c.HiddenSize)
                    : Weight($"model.layers.{i + 1}.input_layernorm.weight", c.HiddenSize);
                (x, h) = SkipNorm(last ? "/model/norm" : $"/model/layers.{i + 1}/input_layernorm", mlp, h, nextW);
            }
            Outputs(LmHead(x), present);
        }

        /// <summary>SkipSimplifiedLayerNormalization: (norm(x + skip)·γ, x + skip).</summary>
        private (Value Normed, Value Sum) SkipNorm(string scope, Value x, Value skip, Value weight)
        {
            using (b.Enter(scope))
            {
                var n = b.AddNode("SkipSimplifiedLayerNormalization", [x, skip, weight], 4, "com.microsoft", "SkipLayerNorm", keep: [0, 3]);
                n.SetAttribute("epsilon", c.RmsNormEps);
                return (n.Outputs[0]!, n.Outputs[3]!);
            }
        }

        private (Value Out, Value PresentKey, Value PresentValue) GenAiAttention(int i, Value x, Value seqlensK, Value totalLen,
            Value cosCache, Value sinCache)
        {
            string s = $"/model/layers.{i}/attn", wp = $"model.layers.{i}.self_attn.";
            long h = c.HiddenSize, qd = (long)c.NumHeads * c.HeadDim, kvd = (long)c.NumKvHeads * c.HeadDim;
            var q = Linear($"{s}/q_proj", wp + "q_proj.weight", x, h, qd, c.AttentionBias);
            var k = Linear($"{s}/k_proj", wp + "k_proj.weight", x, h, kvd, c.AttentionBias);
            var v = Linear($"{s}/v_proj", wp + "v_proj.weight", x, h, kvd, c.AttentionBias);
            Value Rope(string scope, Value t, int heads)
            {
                using (b.Enter(scope))
                    return b.Op("RotaryEmbedding", [t, _positionIds, cosCache, sinCache], n =>
                    {
                        n.SetAttribute("interleaved", 0L);
                        n.SetAttribute("num_heads", (long)heads);
                        n.SetAttribute("rotary_embedding_dim", (long)c.HeadDim);
                    }, domain: "com.microsoft");
            }
            q = Rope($"{s}/q_rotary", q, c.NumHeads);
            k = Rope($"{s}/k_rotary", k, c.NumKvHeads);
            Node gqa;
            using (b.Enter($"{s}/GroupQueryAttention"))
            {
                gqa = b.AddNode("GroupQueryAttention", [q, k, v, _past[i].Key, _past[i].Value, seqlensK, totalLen], 3, "com.microsoft",
                    "GroupQueryAttention");
                gqa.SetAttribute("num_heads", (long)c.NumHeads);
                gqa.SetAttribute("kv_num_heads", (long)c.NumKvHeads);
                gqa.SetAttribute("scale", (float)(1.0 / Math.Sqrt(c.HeadDim)));
            }
            var o = Linear($"{s}/o_proj", wp + "o_proj.weight", gqa.Outputs[0]!, qd, h);
            return (o, gqa.Outputs[1]!, gqa.Outputs[2]!);
        }
    }
}
