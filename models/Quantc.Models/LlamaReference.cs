namespace Quantc.Models;

/// <summary>
/// A plain C# forward pass of the LLaMA decoder (batch 1, prefill, no cache), written from the
/// math rather than from the graph: the independent check that the ONNX graphs compute LLaMA,
/// and the tool the synthetic weights use to place their outliers exactly. Weights are read
/// row by row from their generators, so memory stays at a few rows whatever the model size.
/// </summary>
public sealed class LlamaReference(LlamaConfig c, Func<string, long[], WeightGen> weights)
{
    /// <summary>Residual stream after each layer ([layer][token·hidden]), filled by <see cref="Forward"/>.</summary>
    public List<float[]> Residuals { get; } = [];

    /// <summary>Inputs of each layer's down_proj ([layer][token·intermediate]).</summary>
    public List<float[]> DownProjInputs { get; } = [];

    /// <summary>
    /// Runs <paramref name="ids"/> through layers [0, <paramref name="layers"/>) (all by default) and
    /// returns the logits [tokens·vocab] (null when stopped early).
    /// </summary>
    public float[]? Forward(long[] ids, int layers = -1)
    {
        int n = ids.Length, h = c.HiddenSize, hd = c.HeadDim, kvd = c.NumKvHeads * hd, qd = c.NumHeads * hd, m = c.IntermediateSize;
        if (layers < 0) layers = c.NumLayers;
        Residuals.Clear();
        DownProjInputs.Clear();
        var emb = weights("model.embed_tokens.weight", [c.VocabSize, h]);
        var x = new float[n * h];
        for (int t = 0; t < n; t++) emb.Fill(ids[t] * h, x.AsSpan(t * h, h));
        var (cos, sin, _) = LlamaBuilder.RotaryCaches(c, duplicate: true);

        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            var a = RmsNorm(x, n, Vector(p + "input_layernorm.weight", h));
            var q = MatMul(a, n, weights(p + "self_attn.q_proj.weight", [h, qd]));
            var k = MatMul(a, n, weights(p + "self_attn.k_proj.weight", [h, kvd]));
            var v = MatMul(a, n, weights(p + "self_attn.v_proj.weight", [h, kvd]));
            if (c.AttentionBias)
            {
                AddBias(q, Vector(p + "self_attn.q_proj.bias", qd));
                AddBias(k, Vector(p + "self_attn.k_proj.bias", kvd));
                AddBias(v, Vector(p + "self_attn.v_proj.bias", kvd));
            }
            Rope(q, n, c.NumHeads, cos, sin);
            Rope(k, n, c.NumKvHeads, cos, sin);
            var ctx = new float[n * qd];
            int rep = c.NumHeads / c.NumKvHeads;
            float scale = (float)(1.0 / Math.Sqrt(hd));
            var scores = new double[n];
            for (int head = 0; head < c.NumHeads; head++)
            {
                int kvh = head / rep;
                for (int t = 0; t < n; t++)
                {
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[t * qd + head * hd + i] * k[s * kvd + kvh * hd + i];
                        scores[s] = dot * scale;
                        max = Math.Max(max, scores[s]);
                    }
                    double sum = 0;
                    for (int s = 0; s <= t; s++) { scores[s] = DetMath.Exp(scores[s] - max); sum += scores[s]; }
                    for (int i = 0; i < hd; i++)
                    {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += scores[s] * v[s * kvd + kvh * hd + i];
                        ctx[t * qd + head * hd + i] = (float)(acc / sum);
                    }
                }
            }
            var o = MatMul(ctx, n, weights(p + "self_attn.o_proj.weight", [qd, h]));
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            var b2 = RmsNorm(x, n, Vector(p + "post_attention_layernorm.weight", h));
            var gate = MatMul(b2, n, weights(p + "mlp.gate_proj.weight", [h, m]));
            var up = MatMul(b2, n, weights(p + "mlp.up_proj.weight", [h, m]));
            for (int i = 0; i < gate.Length; i++) gate[i] = (float)(gate[i] / (1.0 + DetMath.Exp(-gate[i])) * up[i]);
            DownProjInputs.Add(gate);
            var down = MatMul(gate, n, weights(p + "mlp.down_proj.weight", [m, h]));
            for (int i = 0; i < x.Length; i++) x[i] += down[i];
            Residuals.Add((float[])x.Clone());
        }
        if (layers < c.NumLayers) return null;
        var f = RmsNorm(x, n, Vector("model.norm.weight", h));
        if (!c.TieWordEmbeddings) return MatMul(f, n, weights("lm_head.weight", [h, c.VocabSize]));
        // Tied: logits = f·Eᵀ, one embedding row per vocabulary entry.
        var logits = new float[n * c.VocabSize];
        var row = new float[h];
        for (int vId = 0; vId < c.VocabSize; vId++)
        {
            emb.Fill((long)vId * h, row);
            for (int t = 0; t < n; t++)
            {
                double acc = 0;
                for (int i = 0; i < h; i++) acc += (double)f[t * h + i] * row[i];
                logits[t * c.VocabSize + vId] = (float)acc;
            }
        }
        return logits;
    }

    private static void AddBias(float[] y, float[] bias)
    {
        for (int i = 0; i < y.Length; i++) y[i] += bias[i % bias.Length];
    }

    private float[] Vector(string name, int len) => weights(name, [len]).ToArray();

    /// <summary>x·γ/√(mean(x²)+ε) per token.</summary>
    public float[] RmsNorm(float[] x, int n, float[] gamma)
    {
        int h = gamma.Length;
        var y = new float[x.Length];
        for (int t = 0; t < n; t++)
        {
            double ss = 0;
            for (int i = 0; i < h; i++) ss += (double)x[t * h + i] * x[t * h + i];
            double r = 1.0 / Math.Sqrt(ss / h + c.RmsNormEps);
            for (int i = 0; i < h; i++) y[t * h + i] = (float)(x[t * h + i] * r * gamma[i]);
        }
        return y;
    }

    /// <summary>[n, in] × W[in, out], streaming W by rows.</summary>
    public static float[] MatMul(float[] x, int n, WeightGen w)
    {
        int rows = (int)w.Rows, cols = (int)w.Cols;
        var acc = new double[n * cols];
        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            w.Fill((long)r * cols, row);
            for (int t = 0; t < n; t++)
            {
                double xv = x[t * rows + r];
                if (xv == 0) continue;
                int o = t * cols;
                for (int j = 0; j < cols; j++) acc[o + j] += xv * row[j];
            }
        }
        var y = new float[acc.Length];
        for (int i = 0; i < y.Length; i++) y[i] = (float)acc[i];
        return y;
    }

    private void Rope(float[] x, int n, int heads, float[] cos, float[] sin)
    {
        int hd = c.HeadDim, half = hd / 2, width = heads * hd;
        var tmp = new float[hd];
        for (int t = 0; t < n; t++)
            for (int head = 0; head < heads; head++)
            {
                int o = t * width + head * hd;
                for (int i = 0; i < hd; i++)
                {
                    float rot = i < half ? -x[o + i + half] : x[o + i - half];
                    tmp[i] = x[o + i] * cos[t * hd + i] + rot * sin[t * hd + i];
                }
                tmp.CopyTo(x, o);
            }
    }
}
