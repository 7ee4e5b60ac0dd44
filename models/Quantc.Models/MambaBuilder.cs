using System.Globalization;
using Quantc.Ir;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>Hyper-parameters of a Mamba-1 model (the fields of a Hugging Face MambaConfig that matter here).</summary>
public sealed record MambaConfig
{
    public int VocabSize { get; init; } = ByteVocab.Size;
    public int HiddenSize { get; init; }
    public int NumLayers { get; init; }
    public int StateSize { get; init; } = 16;
    public int ConvKernel { get; init; } = 4;
    public int Expand { get; init; } = 2;
    public int TimeStepRank { get; init; }
    public float RmsNormEps { get; init; } = 1e-5f;
    /// <summary>Per layer, channels of the selective-scan input x that spike (150–300×) on the trigger token only.</summary>
    public int OutlierChannels { get; init; } = 1;
    /// <summary>Channels of out_proj's input whose values are massive (D of 150–300) on every token.</summary>
    public int MassiveChannels { get; init; } = 2;

    public int InnerSize => Expand * HiddenSize;

    public long ParameterCount
    {
        get
        {
            long d = HiddenSize, e = InnerSize, n = StateSize, r = TimeStepRank;
            long layer = d + d * 2 * e + e * ConvKernel + e + e * (r + 2 * n) + r * e + e + e * n + e + e * d;
            return (long)VocabSize * d * 2 + NumLayers * layer + d;
        }
    }

    public void Validate()
    {
        if (HiddenSize <= 0 || NumLayers <= 0 || StateSize <= 0 || ConvKernel < 2 || Expand <= 0 || TimeStepRank <= 0)
            throw new ArgumentException("mamba config: sizes must be positive (conv kernel ≥ 2)");
    }

    public static MambaConfig ForSize(string size) => size switch
    {
        "tiny" => new MambaConfig { HiddenSize = 128, NumLayers = 4, TimeStepRank = 8 },
        "small" => new MambaConfig { HiddenSize = 512, NumLayers = 12, TimeStepRank = 32 },
        "1b" => new MambaConfig { HiddenSize = 2048, NumLayers = 40, TimeStepRank = 128 },
        _ => throw new ArgumentException($"unknown size '{size}' (tiny, small, 1b)"),
    };
}

/// <summary>
/// Seeded Mamba-1 weights initialised as Mamba does (A = −[1..N] per channel (S4D-real),
/// D = 1, dt_proj bias = softplus⁻¹ of a log-uniform step in [0.001, 0.1]) and shaped with
/// Quamba's two targets:
/// <list type="bullet">
/// <item><b>Token-sparse outliers in the scan input x.</b> A <i>trigger flag</i> residual channel
/// (<see cref="TriggerChannel"/>) is <see cref="TriggerValue"/> in the embedding of
/// <see cref="TriggerToken"/> ('A') and 0 for every other token; no layer writes to it (its out_proj
/// columns are zero). In each layer, in_proj's x column of one channel (<see cref="OutlierChannels"/>)
/// reads the flag with a large weight and the conv of that channel sees only the current token,
/// so x spikes 150–300× in that channel on trigger tokens only — a handful of values out of
/// tokens × d_inner, which a 99.999th-percentile clip removes. x_proj's and out_proj's rows of that
/// channel are divided by the same factor, so the spike's effect on Δ, B, C and the block output
/// stays ordinary (and clipping it costs little).</item>
/// <item><b>Massive channel outliers in out_proj's input.</b> Two channels
/// (<see cref="MassiveChannels"/>) get a skip D of 150–300 per layer, so y = C·h + D·x and hence
/// y·SiLU(z) are massive there on every token; out_proj's rows of those channels are divided by D.</item>
/// </list>
/// </summary>
public sealed class SyntheticMambaWeights : IWeightSource
{
    /// <summary>The token whose embedding carries the trigger flag.</summary>
    public const int TriggerToken = 'A';
    /// <summary>The flag's value in the trigger token's embedding.</summary>
    public const float TriggerValue = 8f;
    /// <summary>≈ the flag after the pre-mixer RMSNorm (embedding rms ≈ 1 plus the flag).</summary>
    private const float NormalizedFlag = 6f;

    private readonly MambaConfig _c;
    private readonly long _seed;
    private readonly long _materializeBytes;

    public SyntheticMambaWeights(MambaConfig c, long seed, long materializeBytes = (1L << 20) - 1)
    {
        _c = c;
        _seed = seed;
        _materializeBytes = materializeBytes;
        var rs = RandomStream.For(seed, "mamba-outlier-plan");
        var perm = Enumerable.Range(0, c.InnerSize).ToArray();
        for (int i = perm.Length - 1; i > 0; i--) { int j = rs.NextInt(i, i + 1); (perm[i], perm[j]) = (perm[j], perm[i]); }
        TriggerChannel = rs.Derive("trigger").NextInt(0, c.HiddenSize);
        int m = Math.Min(c.MassiveChannels, c.InnerSize - 1);
        MassiveChannels = perm.Take(m).Order().ToArray();
        int k = Math.Min(c.OutlierChannels, c.InnerSize - m);
        var ls = rs.Derive("layers");
        var vs = rs.Derive("scales");
        OutlierChannels = new int[c.NumLayers][];
        Scale = new float[c.NumLayers][];
        MassiveD = new float[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            // k distinct channels of the non-massive ones, drawn per layer.
            var rest = perm.Skip(m).ToArray();
            for (int i = 0; i < k; i++) { int j = ls.NextInt(l * 64 + i, rest.Length - i) + i; (rest[i], rest[j]) = (rest[j], rest[i]); }
            OutlierChannels[l] = rest.Take(k).Order().ToArray();
            Scale[l] = OutlierChannels[l].Select((_, i) => (float)(150 + 150 * vs.Uniform(l * 128 + i))).ToArray();
            MassiveD[l] = MassiveChannels.Select((_, i) => (float)(150 + 150 * vs.Uniform(l * 128 + 64 + i))).ToArray();
        }
    }

    /// <summary>The residual channel that carries the trigger flag.</summary>
    public int TriggerChannel { get; }
    /// <summary>Per layer, the channels of x that spike on the trigger token.</summary>
    public int[][] OutlierChannels { get; }
    /// <summary>The channels of out_proj's input that are massive on every token.</summary>
    public int[] MassiveChannels { get; }
    /// <summary>Per layer, the spike factor of each of <see cref="OutlierChannels"/>.</summary>
    public float[][] Scale { get; }
    /// <summary>Per layer, D of each of <see cref="MassiveChannels"/>.</summary>
    public float[][] MassiveD { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Metadata =>
    [
        KeyValuePair.Create("quantc.outliers.trigger_tokens", TriggerToken.ToString(CultureInfo.InvariantCulture)),
        KeyValuePair.Create("quantc.outliers.trigger_channel", TriggerChannel.ToString(CultureInfo.InvariantCulture)),
        KeyValuePair.Create("quantc.outliers.ssm_input_channels", string.Join(";", OutlierChannels.Select(l => string.Join(",", l)))),
        KeyValuePair.Create("quantc.outliers.out_proj_massive_channels", string.Join(",", MassiveChannels)),
    ];

    public Tensor Get(string name, long[] dims)
    {
        if (name.EndsWith(".mixer.A_log", StringComparison.Ordinal) || name.EndsWith(".mixer.D", StringComparison.Ordinal) ||
            name.EndsWith(".mixer.dt_proj.bias", StringComparison.Ordinal))
            return Tensor.FromFloats(name, dims, Values(name, dims));
        return Generator(name, dims).ToTensor(name, dims, _materializeBytes);
    }

    /// <summary>Deterministic non-random parameters (A_log, D) and the dt bias.</summary>
    public float[] Values(string name, long[] dims)
    {
        int e = _c.InnerSize, n = _c.StateSize;
        if (name.EndsWith(".mixer.A_log", StringComparison.Ordinal))
        {
            var a = new float[e * n];
            for (int i = 0; i < e; i++) for (int s = 0; s < n; s++) a[i * n + s] = (float)DetMath.Log(s + 1);
            return a;
        }
        if (name.EndsWith(".mixer.D", StringComparison.Ordinal))
        {
            var dv = Enumerable.Repeat(1f, e).ToArray();
            int layer = Layer(name);
            for (int i = 0; i < MassiveChannels.Length; i++) dv[MassiveChannels[i]] = MassiveD[layer][i];
            return dv;
        }
        if (name.EndsWith(".mixer.dt_proj.bias", StringComparison.Ordinal))
        {
            var rs = RandomStream.For(_seed, name);
            var b = new float[e];
            double lo = DetMath.Log(0.001), hi = DetMath.Log(0.1);
            for (int i = 0; i < e; i++)
            {
                double dt = Math.Max(DetMath.Exp(lo + rs.Uniform(i) * (hi - lo)), 1e-4);
                b[i] = (float)(dt + DetMath.Log(-(DetMath.Exp(-dt) - 1)));   // softplus⁻¹(dt)
            }
            return b;
        }
        return Generator(name, dims).ToArray();
    }

    public WeightGen Generator(string name, long[] dims)
    {
        var rs = RandomStream.For(_seed, name);
        long rows = dims.Length == 1 ? 1 : dims[0], cols = dims.Length == 1 ? dims[0] : dims.Skip(1).Aggregate(1L, (a, b) => a * b);
        switch (name)
        {
            case "backbone.embeddings.weight":
            {
                var g = new WeightGen(rs, rows, cols, 1.0).ScaleCol(TriggerChannel, 0f);
                if (TriggerToken < rows) g.Set(TriggerToken, TriggerChannel, TriggerValue);
                return g;
            }
            case "backbone.norm_f.weight": return new WeightGen(rs, 1, cols, 0.02, 1.0);
            case "lm_head.weight": return new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
        }
        int layer = Layer(name);
        string part = name[(name.IndexOf('.', LayerPrefix.Length) + 1)..];
        var scale = Scale[layer];
        var spiking = OutlierChannels[layer];
        switch (part)
        {
            case "norm.weight": return new WeightGen(rs, 1, cols, 0.02, 1.0);
            case "mixer.in_proj.weight":
            {
                var g = new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
                for (int i = 0; i < spiking.Length; i++) g.Set(TriggerChannel, spiking[i], scale[i] / NormalizedFlag);
                return g;
            }
            case "mixer.conv1d.weight":
            {
                // The spiking channels see only the current token, so a spike stays on its token.
                var g = new WeightGen(rs, rows, cols, 0.5);
                foreach (int ch in spiking)
                    for (int j = 0; j < cols; j++) g.Set(ch, j, j == cols - 1 ? 1f : 0f);
                return g;
            }
            case "mixer.conv1d.bias": return new WeightGen(rs, 1, cols, 0.1);
            case "mixer.x_proj.weight":
            {
                var g = new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows));
                for (int i = 0; i < spiking.Length; i++) g.ScaleRow(spiking[i], 1f / scale[i]);
                return g;
            }
            case "mixer.dt_proj.weight": return new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows) / Math.Sqrt(3));
            case "mixer.out_proj.weight":
            {
                var g = new WeightGen(rs, rows, cols, 1.0 / Math.Sqrt(rows) / Math.Sqrt(_c.NumLayers)).ScaleCol(TriggerChannel, 0f);
                for (int i = 0; i < spiking.Length; i++) g.ScaleRow(spiking[i], 1f / scale[i]);
                for (int i = 0; i < MassiveChannels.Length; i++) g.ScaleRow(MassiveChannels[i], 1f / MassiveD[layer][i]);
                return g;
            }
            default: throw new ArgumentException($"no synthetic weight '{name}'");
        }
    }

    private const string LayerPrefix = "backbone.layers.";

    private static int Layer(string name)
    {
        if (!name.StartsWith(LayerPrefix, StringComparison.Ordinal)) throw new ArgumentException($"no synthetic weight '{name}'");
        int dot = name.IndexOf('.', LayerPrefix.Length);
        return int.Parse(name.AsSpan(LayerPrefix.Length, dot - LayerPrefix.Length), CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// Builds a Mamba-1 model in the shape of a torch.onnx export, with the selective scan written
/// with the standard ONNX <c>Scan</c> operator: embedding; N × [RMSNorm → in_proj → split (x, z)
/// → causal depthwise Conv (kernel 4) over [conv state, x] → SiLU → x_proj → split (dt, B, C) →
/// dt_proj + Softplus → Scan over the sequence of h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t,
/// y_t = C_t·h_t + D·x_t → y·SiLU(z) → out_proj → residual]; final RMSNorm; lm_head.
/// Inputs <c>input_ids</c> and, per layer, <c>past_conv_states.{i}</c> [batch, d_inner, kernel−1]
/// and <c>past_ssm_states.{i}</c> [batch, d_inner, d_state] (zeros for a fresh sequence);
/// outputs <c>logits</c>, <c>present_conv_states.{i}</c>, <c>present_ssm_states.{i}</c>.
/// </summary>
public static class MambaBuilder
{
    public static Model Build(MambaConfig c, IWeightSource w, string flavor = "torch")
    {
        c.Validate();
        if (flavor != "torch") throw new ArgumentException($"unknown flavor '{flavor}' for mamba (torch)");
        var model = Model.Create("main_graph", 18, irVersion: 8);
        model.ProducerName = "quantc (torch.onnx shape)";
        model.ProducerVersion = "models-" + LlamaBuilder.FormatVersion;
        var b = new OnnxBuilder(model.Graph);
        Value W(string name, params long[] dims) => b.Graph.AddInitializer(w.Get(name, dims), name);
        long d = c.HiddenSize, e = c.InnerSize, n = c.StateSize, r = c.TimeStepRank;
        int kc = c.ConvKernel;

        var ids = b.Input("input_ids", DT.Int64, "batch_size", "sequence_length");
        var convIn = new List<Value>();
        var ssmIn = new List<Value>();
        for (int i = 0; i < c.NumLayers; i++)
        {
            convIn.Add(b.Input($"past_conv_states.{i}", DT.Float, "batch_size", e, kc - 1));
            ssmIn.Add(b.Input($"past_ssm_states.{i}", DT.Float, "batch_size", e, n));
        }
        Value h;
        var emb = W("backbone.embeddings.weight", c.VocabSize, d);
        using (b.Enter("/backbone/embeddings")) h = b.Op("Gather", [emb, ids], nd => nd.SetAttribute("axis", 0L));

        var convOut = new List<Value>();
        var ssmOut = new List<Value>();
        for (int i = 0; i < c.NumLayers; i++)
        {
            string ls = $"/backbone/layers.{i}", ms = $"{ls}/mixer", wp = $"backbone.layers.{i}.";
            var x0 = RmsNorm(b, $"{ls}/norm", h, W(wp + "norm.weight", d), c.RmsNormEps);
            var inW = W(wp + "mixer.in_proj.weight", d, 2 * e);
            Value xz, x, z;
            using (b.Enter($"{ms}/in_proj")) xz = b.Op("MatMul", x0, inW);
            using (b.Enter(ms))
            {
                var sp = b.AddNode("Split", [xz, b.Ints(e, e)], 2);
                sp.SetAttribute("axis", -1L);
                x = sp.Outputs[0]!;
                z = sp.Outputs[1]!;
            }
            var convW = W(wp + "mixer.conv1d.weight", e, 1, kc);
            var convB = W(wp + "mixer.conv1d.bias", e);
            Value xc;
            using (b.Enter($"{ms}/conv1d"))
            {
                var xt = b.Op("Transpose", [x], nd => nd.SetAttribute("perm", [0L, 2, 1]));             // [b, e, L]
                var cat = b.Op("Concat", [convIn[i], xt], nd => nd.SetAttribute("axis", 2L));           // [b, e, k−1+L]
                convOut.Add(b.Op("Slice", cat, b.Ints(-(kc - 1)), b.Ints(long.MaxValue), b.Ints(2)));
                xc = b.Op("Conv", [cat, convW, convB], nd =>
                {
                    nd.SetAttribute("group", e);
                    nd.SetAttribute("kernel_shape", [(long)kc]);
                    nd.SetAttribute("pads", [0L, 0]);
                    nd.SetAttribute("strides", [1L]);
                    nd.SetAttribute("dilations", [1L]);
                });
            }
            using (b.Enter($"{ms}/act"))
            {
                xc = b.Op("Transpose", [xc], nd => nd.SetAttribute("perm", [0L, 2, 1]));               // [b, L, e]
                xc = b.Op("Mul", xc, b.Op("Sigmoid", xc));
            }
            var xpW = W(wp + "mixer.x_proj.weight", e, r + 2 * n);
            Value dbc, dt, bm, cm;
            using (b.Enter($"{ms}/x_proj")) dbc = b.Op("MatMul", xc, xpW);
            using (b.Enter(ms))
            {
                var sp = b.AddNode("Split", [dbc, b.Ints(r, n, n)], 3);
                sp.SetAttribute("axis", -1L);
                (dt, bm, cm) = (sp.Outputs[0]!, sp.Outputs[1]!, sp.Outputs[2]!);
            }
            var dtW = W(wp + "mixer.dt_proj.weight", r, e);
            var dtB = W(wp + "mixer.dt_proj.bias", e);
            Value delta;
            using (b.Enter($"{ms}/dt_proj")) delta = b.Op("Add", dtB, b.Op("MatMul", dt, dtW));
            using (b.Enter(ms)) delta = b.Op("Softplus", delta);
            var aLog = W(wp + "mixer.A_log", e, n);
            var dSkip = W(wp + "mixer.D", e);
            Value a;
            using (b.Enter(ms)) a = b.Op("Neg", b.Op("Exp", aLog));

            Node scan;
            using (b.Enter($"{ms}/selective_scan"))
            {
                scan = b.AddNode("Scan", [ssmIn[i], delta, xc, bm, cm], 2);
                scan.SetAttribute("num_scan_inputs", 4L);
                scan.SetAttribute("scan_input_axes", [1L, 1, 1, 1]);
                scan.SetAttribute("scan_output_axes", [1L]);
                var body = scan.SetSubgraph("body", $"selective_scan_{i}");
                var bb = new OnnxBuilder(body, b);
                using (bb.Enter($"{ms}/selective_scan/body"))
                {
                    var hPrev = bb.Input($"{ms}/selective_scan/h_prev", DT.Float, "batch_size", e, n);
                    var dT = bb.Input($"{ms}/selective_scan/delta_t", DT.Float, "batch_size", e);
                    var xT = bb.Input($"{ms}/selective_scan/x_t", DT.Float, "batch_size", e);
                    var bT = bb.Input($"{ms}/selective_scan/B_t", DT.Float, "batch_size", n);
                    var cT = bb.Input($"{ms}/selective_scan/C_t", DT.Float, "batch_size", n);
                    var dA = bb.Op("Exp", bb.Op("Mul", bb.Op("Unsqueeze", dT, bb.Ints(-1)), a));                     // [b, e, n]
                    var dBx = bb.Op("Mul", bb.Op("Unsqueeze", bb.Op("Mul", dT, xT), bb.Ints(-1)), bb.Op("Unsqueeze", bT, bb.Ints(1)));
                    var hNew = bb.Op("Add", bb.Op("Mul", dA, hPrev), dBx);
                    var y = bb.Op("Squeeze", bb.Op("MatMul", hNew, bb.Op("Unsqueeze", cT, bb.Ints(-1))), bb.Ints(-1));
                    y = bb.Op("Add", y, bb.Op("Mul", dSkip, xT));
                    bb.Output(hNew, $"{ms}/selective_scan/h_next", DT.Float, "batch_size", e, n);
                    bb.Output(y, $"{ms}/selective_scan/y_t", DT.Float, "batch_size", e);
                }
            }
            ssmOut.Add(scan.Outputs[0]!);
            Value gated;
            using (b.Enter(ms)) gated = b.Op("Mul", scan.Outputs[1]!, b.Op("Mul", z, b.Op("Sigmoid", z)));
            var outW = W(wp + "mixer.out_proj.weight", e, d);
            Value o;
            using (b.Enter($"{ms}/out_proj")) o = b.Op("MatMul", gated, outW);
            using (b.Enter(ls)) h = b.Op("Add", h, o);
        }
        h = RmsNorm(b, "/backbone/norm_f", h, W("backbone.norm_f.weight", d), c.RmsNormEps);
        var head = W("lm_head.weight", d, c.VocabSize);
        Value logits;
        using (b.Enter("/lm_head")) logits = b.Op("MatMul", h, head);
        b.Output(logits, "logits", DT.Float, "batch_size", "sequence_length", c.VocabSize);
        for (int i = 0; i < c.NumLayers; i++)
        {
            b.Output(convOut[i], $"present_conv_states.{i}", DT.Float, "batch_size", e, kc - 1);
            b.Output(ssmOut[i], $"present_ssm_states.{i}", DT.Float, "batch_size", e, n);
        }
        model.SetMetadata("quantc.arch", "mamba");
        model.SetMetadata("quantc.flavor", flavor);
        model.SetMetadata("quantc.tokenizer", c.VocabSize == ByteVocab.Size ? "byte" : "none");
        model.SetMetadata("quantc.config", string.Create(CultureInfo.InvariantCulture,
            $"{{\"model_type\":\"mamba\",\"vocab_size\":{c.VocabSize},\"hidden_size\":{c.HiddenSize}," +
            $"\"num_hidden_layers\":{c.NumLayers},\"state_size\":{c.StateSize},\"conv_kernel\":{c.ConvKernel},\"expand\":{c.Expand}," +
            $"\"time_step_rank\":{c.TimeStepRank},\"layer_norm_epsilon\":{c.RmsNormEps:R}}}"));
        foreach (var kv in w.Metadata) model.SetMetadata(kv.Key, kv.Value);
        model.Graph.Validate();
        return model;
    }

    private static Value RmsNorm(OnnxBuilder b, string scope, Value x, Value weight, float eps)
    {
        using (b.Enter(scope))
        {
            var mean = b.Op("ReduceMean", [b.Op("Pow", x, b.F32(2f)), b.Ints(-1)], n => n.SetAttribute("keepdims", 1L));
            var rstd = b.Op("Reciprocal", b.Op("Sqrt", b.Op("Add", mean, b.F32(eps))));
            return b.Op("Mul", weight, b.Op("Mul", x, rstd));
        }
    }
}
