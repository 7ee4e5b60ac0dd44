using System.Globalization;
using Quantc.Ir;

namespace Quantc.Models;

/// <summary>
/// Supplies a model's weights by Hugging Face name, in the layout the ONNX graph uses:
/// linear weights pre-transposed to [in, out], everything else as in the checkpoint.
/// </summary>
public interface IWeightSource
{
    /// <summary>The tensor <paramref name="name"/> with shape <paramref name="dims"/>; throws a clear error when missing or
    /// mis-shaped.</summary>
    Tensor Get(string name, long[] dims);

    /// <summary>Metadata entries to record in the model (e.g. the outlier plan), in a fixed order.</summary>
    IReadOnlyList<KeyValuePair<string, string>> Metadata { get; }
}

/// <summary>
/// Where the seeded outliers of a synthetic LLaMA sit. All choices come from the seed:
/// <list type="bullet">
/// <item><b>Trigger flag</b> (<see cref="TriggerChannel"/>): a residual channel that is
/// <see cref="TriggerValue"/> in the embeddings of BOS and the delimiter '\n', zero for every
/// other token, and that no layer writes to (its o_proj/down_proj columns are zero).</item>
/// <item><b>Massive activations</b>: in layer <see cref="MassiveLayer"/> one MLP neuron
/// (<see cref="MassiveNeuron"/>) reads the flag through gate and up
/// (SiLU(g·n)·u·n is quadratic in the flag), so it fires ~1000× for trigger tokens only; its
/// down_proj column writes the result into <see cref="MassiveChannels"/> of the residual stream
/// (hundreds × the median), which then ride the residual stream until layer
/// <see cref="CancelLayer"/>, where two neurons gated by the flag (<see cref="CancelNeurons"/>,
/// one fed by the massive channel, one by the flag) write them back out; their down_proj
/// weights are solved so that the massive values of BOS and of the delimiter, computed with the
/// C# reference forward, cancel exactly. Hence spikes in the down_proj inputs of those two
/// layers only.</item>
/// <item><b>Channel outliers</b> (<see cref="OutlierChannels"/>): the input_layernorm and
/// post_attention_layernorm weights of these channels are 20–50 (others ≈ 1), and the matching
/// input rows of q/k/v (resp. gate/up) are divided by the same factor, so the function is that
/// of an ordinary network while the activations entering those projections carry persistent
/// outlier channels — exactly what SmoothQuant migrates into the weights.</item>
/// </list>
/// </summary>
public sealed class LlamaOutlierPlan
{
    public const float TriggerValue = 8f;
    public const float MassiveGate = 6f, MassiveUp = 6f;
    public const float MassiveWrite1 = 0.3f, MassiveWrite2 = -0.2f;
    public const float CancelGate = 30f, CancelUp = 8f, CancelUpFlag = 30f;

    /// <summary>The text whose delimiter anchors the cancellation (BOS at position 0 is the other anchor).</summary>
    public const string AnchorText = "The first line.\n";

    public LlamaOutlierPlan(LlamaConfig c, long seed)
    {
        var rs = RandomStream.For(seed, "outlier-plan");
        int h = c.HiddenSize;
        var perm = Enumerable.Range(0, h).ToArray();
        for (int i = h - 1; i > 0; i--)   // Fisher–Yates with counter-based draws
        {
            int j = rs.NextInt(i, i + 1);
            (perm[i], perm[j]) = (perm[j], perm[i]);
        }
        int k = Math.Min(c.OutlierChannels, Math.Max(0, h - 3));
        TriggerChannel = perm[0];
        MassiveChannels = [perm[1], perm[2]];
        OutlierChannels = perm.Skip(3).Take(k).Order().ToArray();
        MassiveLayer = c.NumLayers >= 2 ? 1 : 0;
        CancelLayer = c.NumLayers <= 2 ? -1 : c.NumLayers <= 4 ? c.NumLayers - 1 : c.NumLayers - 2;
        var nrs = rs.Derive("neurons");
        MassiveNeuron = nrs.NextInt(0, c.IntermediateSize);
        int j1 = nrs.NextInt(1, c.IntermediateSize), j2 = nrs.NextInt(2, c.IntermediateSize - 1);
        if (j2 >= j1) j2++;
        CancelNeurons = [j1, j2];
        var grs = rs.Derive("gammas");
        AttnGamma = new float[c.NumLayers][];
        MlpGamma = new float[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            AttnGamma[l] = OutlierChannels.Select((_, i) => (float)(20 + 30 * grs.Uniform(l * 64 + 2 * i))).ToArray();
            MlpGamma[l] = OutlierChannels.Select((_, i) => (float)(20 + 30 * grs.Uniform(l * 64 + 2 * i + 1))).ToArray();
        }
    }

    public int TriggerChannel { get; }
    public int[] MassiveChannels { get; }
    public int[] OutlierChannels { get; }
    public int MassiveLayer { get; }
    /// <summary>The layer that removes the massive activations (−1: none).</summary>
    public int CancelLayer { get; }
    public int MassiveNeuron { get; }
    /// <summary>The cancel layer's two neurons: [0] gate·flag × up·massive, [1] gate·flag × up·flag.</summary>
    public int[] CancelNeurons { get; }
    public float[][] AttnGamma { get; }
    public float[][] MlpGamma { get; }
    /// <summary>down_proj weights [neuron][massive channel] of the cancel neurons (solved once the massive values are known).</summary>
    public float[][] CancelWrites { get; internal set; } = [[0, 0], [0, 0]];
    /// <summary>The first massive channel's value after the massive layer, for BOS at position 0 and for the anchor delimiter (C#
    /// reference).</summary>
    public float[] MassiveValues { get; internal set; } = [];

    /// <summary>The plan as model metadata (quantc.outliers.*).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Metadata =>
    [
        KeyValuePair.Create("quantc.outliers.trigger_tokens", $"{ByteVocab.Bos},{ByteVocab.Delimiter}"),
        KeyValuePair.Create("quantc.outliers.trigger_channel", TriggerChannel.ToString(CultureInfo.InvariantCulture)),
        KeyValuePair.Create("quantc.outliers.massive_channels", string.Join(",", MassiveChannels)),
        KeyValuePair.Create("quantc.outliers.massive_layers", CancelLayer >= 0 ? $"{MassiveLayer},{CancelLayer}" : $"{MassiveLayer}"),
        KeyValuePair.Create("quantc.outliers.channels", string.Join(",", OutlierChannels)),
    ];
}

/// <summary>Seeded synthetic LLaMA weights with the outlier structure of <see cref="LlamaOutlierPlan"/>.</summary>
public sealed class SyntheticLlamaWeights : IWeightSource
{
    private readonly LlamaConfig _c;
    private readonly long _seed;
    private readonly long _materializeBytes;

    public SyntheticLlamaWeights(LlamaConfig config, long seed, long materializeBytes = (1L << 20) - 1)
    {
        _c = config;
        _seed = seed;
        _materializeBytes = materializeBytes;
        Plan = new LlamaOutlierPlan(config, seed);
        if (Plan.CancelLayer >= 0) PlaceCancellation();
    }

    /// <summary>
    /// Sizes the cancel neurons' down_proj weights so that they remove the massive activations.
    /// The reference forward of [BOS] + <see cref="LlamaOutlierPlan.AnchorText"/> gives the residual
    /// after the massive layer for BOS (position 0) and for the delimiter; the massive channels ride
    /// the residual stream unchanged but for small drifts, so the cancel neurons' activations at the
    /// cancel layer follow from it. Neuron 0's activation falls as 1/A with the massive value A,
    /// neuron 1's as 1/A²; a 2×2 solve per massive channel makes both anchors cancel exactly.
    /// </summary>
    private void PlaceCancellation()
    {
        var p = Plan;
        var reference = new LlamaReference(_c, Generator);
        long[] ids = [ByteVocab.Bos, .. System.Text.Encoding.UTF8.GetBytes(LlamaOutlierPlan.AnchorText).Select(b => (long)b)];
        reference.Forward(ids, p.MassiveLayer + 1);
        var res = reference.Residuals[p.MassiveLayer];
        int h = _c.HiddenSize, c1 = p.MassiveChannels[0], t = p.TriggerChannel;
        var gamma = Generator($"model.layers.{p.CancelLayer}.post_attention_layernorm.weight", [h]).ToArray();
        int[] anchors = [0, ids.Length - 1];
        var act = new double[2, 2];   // [anchor, neuron]
        var target = new double[2, 2]; // [anchor, channel]
        for (int a = 0; a < 2; a++)
        {
            var r = res.AsSpan(anchors[a] * h, h);
            double ss = 0;
            foreach (var x in r) ss += (double)x * x;
            double rms = Math.Sqrt(ss / h + _c.RmsNormEps);
            double nt = r[t] / rms * gamma[t], n1 = r[c1] / rms * gamma[c1];
            double gate = LlamaOutlierPlan.CancelGate * nt, silu = gate / (1 + DetMath.Exp(-gate));
            act[a, 0] = silu * LlamaOutlierPlan.CancelUp * n1;
            act[a, 1] = silu * LlamaOutlierPlan.CancelUpFlag * nt;
            for (int ch = 0; ch < 2; ch++) target[a, ch] = -r[p.MassiveChannels[ch]];
        }
        p.MassiveValues = [res[c1], res[anchors[1] * h + c1]];
        double det = act[0, 0] * act[1, 1] - act[0, 1] * act[1, 0];
        var w = new float[2][] { new float[2], new float[2] };
        for (int ch = 0; ch < 2; ch++)
        {
            if (Math.Abs(det) > 1e-6 * Math.Abs(act[0, 0] * act[1, 1]))
            {
                w[0][ch] = (float)((target[0, ch] * act[1, 1] - target[1, ch] * act[0, 1]) / det);
                w[1][ch] = (float)((act[0, 0] * target[1, ch] - act[1, 0] * target[0, ch]) / det);
            }
            else   // both anchors alike: one neuron suffices
                w[0][ch] = (float)((target[0, ch] + target[1, ch]) / (act[0, 0] + act[1, 0]));
        }
        p.CancelWrites = w;
    }

    /// <summary>Where the outliers sit.</summary>
    public LlamaOutlierPlan Plan { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Metadata => Plan.Metadata;

    public Tensor Get(string name, long[] dims) => Generator(name, dims).ToTensor(name, dims, _materializeBytes);

    /// <summary>The generator of weight <paramref name="name"/> (exposed for tests and references).</summary>
    public WeightGen Generator(string name, long[] dims)
    {
        var rs = RandomStream.For(_seed, name);
        var p = Plan;
        long rows = dims.Length == 1 ? 1 : dims[0], cols = dims.Length == 1 ? dims[0] : dims[1];
        if (name == "model.embed_tokens.weight")
        {
            var g = new WeightGen(rs, rows, cols, 1.0).ScaleCol(p.TriggerChannel, 0f);
            g.Set(ByteVocab.Bos, p.TriggerChannel, LlamaOutlierPlan.TriggerValue);
            if (ByteVocab.Delimiter < rows) g.Set(ByteVocab.Delimiter, p.TriggerChannel, LlamaOutlierPlan.TriggerValue);
            return g;
        }
        if (name == "model.norm.weight")
        {
            // A tied head reads the embedding (entries of order 1, not 1/√h like lm_head's own weight):
            // the final norm's γ takes the 1/√h instead, so that the logits keep the untied model's scale.
            double gamma = _c.TieWordEmbeddings ? 1.0 / Math.Sqrt(cols) : 1.0;
            return new WeightGen(rs, 1, cols, 0.02 * gamma, mean: gamma);
        }
        if (name == "lm_head.weight") return new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
        if (!name.StartsWith("model.layers.", StringComparison.Ordinal)) throw new ArgumentException($"no synthetic weight '{name}'");
        int dot = name.IndexOf('.', 13);
        int layer = int.Parse(name.AsSpan(13, dot - 13), CultureInfo.InvariantCulture);
        string part = name[(dot + 1)..];
        double std = 1.0 / Math.Sqrt(rows);
        switch (part)
        {
            case "input_layernorm.weight":
            case "post_attention_layernorm.weight":
            {
                var g = new WeightGen(rs, 1, cols, 0.02, mean: 1.0);
                var gamma = part[0] == 'i' ? p.AttnGamma[layer] : p.MlpGamma[layer];
                for (int i = 0; i < p.OutlierChannels.Length; i++) g.ScaleCol(p.OutlierChannels[i], gamma[i]);
                return g;
            }
            case "self_attn.q_proj.bias":
            case "self_attn.k_proj.bias":
            case "self_attn.v_proj.bias":
                return new WeightGen(rs, 1, cols, 0.1);   // Qwen2's q/k/v biases: small, with a few larger entries than the weights' scale
            case "self_attn.q_proj.weight":
            case "self_attn.k_proj.weight":
            case "self_attn.v_proj.weight":
            {
                var g = new WeightGen(rs, rows, cols, std);
                for (int i = 0; i < p.OutlierChannels.Length; i++) g.ScaleRow(p.OutlierChannels[i], 1f / p.AttnGamma[layer][i]);
                return g;
            }
            case "self_attn.o_proj.weight":
                return new WeightGen(rs, rows, cols, 0.5 * std).ScaleCol(p.TriggerChannel, 0f);
            case "mlp.gate_proj.weight":
            case "mlp.up_proj.weight":
            {
                bool gate = part[4] == 'g';
                var g = new WeightGen(rs, rows, cols, std);
                for (int i = 0; i < p.OutlierChannels.Length; i++) g.ScaleRow(p.OutlierChannels[i], 1f / p.MlpGamma[layer][i]);
                if (layer == p.MassiveLayer)
                {
                    g.ScaleCol(p.MassiveNeuron, 0.01f);
                    g.Set(p.TriggerChannel, p.MassiveNeuron, gate ? LlamaOutlierPlan.MassiveGate : LlamaOutlierPlan.MassiveUp);
                }
                if (layer == p.CancelLayer)
                {
                    var (j1, j2) = (p.CancelNeurons[0], p.CancelNeurons[1]);
                    g.ScaleCol(j1, 0.01f).ScaleCol(j2, 0.01f);
                    if (gate)
                        g.Set(p.TriggerChannel, j1, LlamaOutlierPlan.CancelGate).Set(p.TriggerChannel, j2, LlamaOutlierPlan.CancelGate);
                    else g.Set(p.MassiveChannels[0], j1, LlamaOutlierPlan.CancelUp).Set(p.TriggerChannel, j2,
                        LlamaOutlierPlan.CancelUpFlag);
                }
                return g;
            }
            case "mlp.down_proj.weight":
            {
                var g = new WeightGen(rs, rows, cols, 0.5 * std).ScaleCol(p.TriggerChannel, 0f);
                if (layer == p.MassiveLayer)
                {
                    g.ScaleRow(p.MassiveNeuron, 0.01f);
                    g.Set(p.MassiveNeuron, p.MassiveChannels[0], LlamaOutlierPlan.MassiveWrite1);
                    g.Set(p.MassiveNeuron, p.MassiveChannels[1], LlamaOutlierPlan.MassiveWrite2);
                }
                if (layer == p.CancelLayer)
                {
                    for (int k = 0; k < 2; k++)
                    {
                        int j = p.CancelNeurons[k];
                        g.ScaleRow(j, 0.01f);
                        g.Set(j, p.MassiveChannels[0], p.CancelWrites[k][0]);
                        g.Set(j, p.MassiveChannels[1], p.CancelWrites[k][1]);
                    }
                }
                return g;
            }
            default:
                throw new ArgumentException($"no synthetic weight '{name}'");
        }
    }
}
