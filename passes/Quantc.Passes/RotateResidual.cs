using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>
/// RotateResidual (QuaRot's R1): rotates the residual stream by a seeded orthogonal matrix Q (randomised
/// Hadamard, <see cref="Rotation"/>), h' = h·Q, fused into the weights: the embedding table (E·Q), every
/// layer writing the residual (o_proj, down_proj: W·Q, b·Q), every layer reading a norm of it (q/k/v,
/// gate/up, lm_head: Qᵀ·W) — a tied lm_head is the embedding table itself and comes out right from E·Q.
/// RMSNorm commutes with Q once γ is folded (fold_norm): mean(x²) over the hidden axis is ‖x‖²/d, which
/// Q preserves, so ε and the mean are untouched (decomposed, SimplifiedLayerNormalization and
/// SkipSimplifiedLayerNormalization alike; the skip sum is linear). Function-preserving. The pass walks the
/// residual stream from the embedding and refuses the whole model, with the reason, when anything reads
/// the stream that does not commute with a rotation (a LayerNorm, an unfolded γ, a graph output, another op).
/// <para>
/// Rounding (<c>rounding: auto|nearest|activation_aware</c>): the rotated weights are computed in double and
/// stored in float32. Nearest rounding spreads each reader's rounding error evenly over the original channels,
/// and on models with massive activations (a few residual channels hundreds of times the median) those channels
/// amplify it. <c>activation_aware</c> finds those channels on the calibration data first (residual absmax
/// ≥ 100× the median channel's) and rounds each rotated reader column to one of its two float32 neighbours so
/// that the error on those channels is small (<see cref="AwareRounding"/>); <c>auto</c> (the default) does so when calibration data is
/// there.
/// </para>
/// </summary>
public sealed class RotateResidualPass(int seed, string rounding = "auto") : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<RotateResidualOptions>("rotate_residual", PassKind.FunctionPreserving,
        "QuaRot R1: rotate the residual stream by a seeded randomised Hadamard fused into the embedding and every layer writing or " +
            "reading it (needs fold_norm first)",
        o => new RotateResidualPass(o.Seed, o.Rounding));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var stream = map.ResidualStreamOf(n => RotationRefusal(n, map), out string? why)
            ?? throw new BadInputException($"rotate_residual: cannot rotate the residual stream: {why}" +
                (QuantizePass.AlreadyQuantized(g) is { } done ? $"; the model is already quantized ({done})" : ""));
        var q = Rotation.Create(stream.Hidden, seed);
        var massive = MassiveChannels(ctx, stream);

        var table = stream.Embedding.Inputs[0]!;
        var e = table.Initializer!.ToFloat32();
        q.ApplyChunks(e);
        g.SetInitializer(table, Tensor.FromFloats(table.Name, table.Initializer.Dims, e));

        foreach (var w in stream.Writers)
        {
            RotatedWeights.Outputs(g, w, q);
            ctx.Plan[w.Name].Transforms.Add("R1: output rotated into the residual basis");
            ctx.ReleaseLayerCopies();
        }
        foreach (var r in stream.Readers)
        {
            if (ReferenceEquals(r.Weight, table)) { ctx.Plan[r.Name].Transforms.Add("R1: tied to the rotated embedding"); continue; }
            if (massive is { Count: > 0 } channels)
            {
                RotatedWeights.InputsAware(g, r, q, channels);
                ctx.Plan[r.Name].Transforms.Add($"R1: input rotated back (Qᵀ·W), float32 rounding aware of the massive " +
                    $"channels {string.Join(", ", channels.Select(c => c.Channel))}");
            }
            else
            {
                RotatedWeights.Inputs(g, r, q);
                ctx.Plan[r.Name].Transforms.Add("R1: input rotated back (Qᵀ·W)");
            }
            ctx.ReleaseLayerCopies();
        }
        foreach (var b in stream.SkipBiases) RotatedWeights.Vector(g, b, q);
        foreach (var v in stream.RotatedValues) ctx.Provenance.RecordTransformed(v.Name, "rotated");
        ctx.Log.Add($"rotate_residual: {q.Description} fused into the embedding '{table.Name}', {stream.Writers.Count} residual writers, " +
            $"{stream.Readers.Count} readers, through {stream.Norms.Count} norms");
        if (!q.IsHadamard)
            ctx.Log.Add($"rotate_residual: hidden size {stream.Hidden} has no Hadamard matrix: used a seeded random orthogonal matrix " +
            $"instead");
    }

    /// <summary>
    /// The residual channels that carry massive activations (Sun et al.: absmax ≥ 100× the median channel's, on any
    /// residual value of the calibration run), for activation-aware rounding of every reader; null for nearest
    /// rounding (asked for, or auto without calibration data). On the tokens that carry them, a reader's normalised
    /// input is almost all in those channels, and those tokens' outputs drive the rest of the network (attention
    /// sinks, the circuits that write and cancel the spikes), so the readers' rounding error there is what the
    /// logits show; nearest rounding puts a full share of it on every channel.
    /// </summary>
    private List<(int Channel, double Scale)>? MassiveChannels(PassContext ctx, ResidualStream stream)
    {
        if (rounding == "nearest") return null;
        var names = stream.Residual.Select(v => v.Name).ToList();
        bool haveData = ctx.CanCalibrate(names);
        if (rounding == "auto" && !haveData)
        {
            ctx.Log.Add("rotate_residual: nearest float32 rounding of the rotated weights (no calibration data for activation-aware " +
                "rounding)");
            return null;
        }
        var stats = ctx.Calibrate(names, Name);
        var best = new SortedDictionary<int, double>();
        foreach (var name in names)
            foreach (var (f, scale) in AwareRounding.Emphasised(stats[name].ChannelAbsMax, ratio: MassiveRatio))
                best[f] = Math.Max(best.GetValueOrDefault(f), scale);
        var channels = best.OrderByDescending(kv => kv.Value).Take(16).OrderBy(kv => kv.Key).Select(kv => (kv.Key, kv.Value)).ToList();
        ctx.Log.Add(channels.Count == 0
            ? $"rotate_residual: activation-aware rounding: no residual channel reaches {MassiveRatio}× the median absmax; nearest rounding"
            : $"rotate_residual: activation-aware float32 rounding of the readers' rotated weights on the massive residual channels " +
              string.Join(", ", channels.Select(c => $"{c.Key} ({c.Value:0}×)")) + $" (absmax ≥ {MassiveRatio}× the median channel's)");
        return channels;
    }

    /// <summary>Why a norm on the residual stream does not commute with a rotation of it (null when it does).</summary>
    private static string? RotationRefusal(NormInfo norm, ModelMap map)
    {
        if (norm.Kind != NormKind.RmsNorm) return $"{norm.Name} is a LayerNorm: its mean subtraction does not commute with a rotation";
        var gamma = norm.Gamma.Initializer!.ToFloat32();
        if (gamma.Any(x => x != gamma[0]))
            return $"{norm.Name} has its γ not folded into the layers it feeds (run fold_norm before rotate_residual" +
                (NormReaders.Of(norm, map, out string? why, allowSharedWeights: true) is null ? $"; fold_norm cannot: {why})" : ")");
        if (norm.Beta?.Initializer is { } bt && bt.ToFloat32().Any(x => x != 0)) return $"{norm.Name} has a non-zero β";
        return null;
    }


    /// <summary>A residual channel counts as massive at this multiple of the median channel's absmax.</summary>
    public const double MassiveRatio = 100;
}

/// <summary>A rotation fused into a linear layer's weights, chunk by chunk of the rotation's order (whole rows for R1, heads for
/// R2).</summary>
internal static class RotatedWeights
{
    /// <summary>Output side: W ← W·diag(Q, …, Q), b ← b·diag(Q, …).</summary>
    public static void Outputs(Graph g, LinearLayer l, Rotation q)
    {
        var kn = Weights.Read(l);
        q.ApplyChunks(kn);                      // each row of [K, N], chunk by chunk
        Weights.Write(g, l, kn);
        if (l.Bias is { } b) Vector(g, b, q);
    }

    /// <summary>Input side: W ← diag(Qᵀ, …)·W, column by column: Qᵀ·w_c = (w_cᵀ·Q)ᵀ.</summary>
    public static void Inputs(Graph g, LinearLayer l, Rotation q)
    {
        var kn = Weights.Read(l);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        var nk = new float[kn.Length];
        for (int j = 0; j < k; j++) for (int c = 0; c < n; c++) nk[c * k + j] = kn[j * n + c];
        q.ApplyChunks(nk);
        for (int j = 0; j < k; j++) for (int c = 0; c < n; c++) kn[j * n + c] = nk[c * k + j];
        Weights.Write(g, l, kn);
    }

    /// <summary>
    /// Input side for a whole-row rotation (R1: K = d), each column computed in double and rounded to float32 with
    /// <see cref="AwareRounding"/>, emphasising <paramref name="channels"/> (original-basis input channels and their scales).
    /// </summary>
    public static void InputsAware(Graph g, LinearLayer l, Rotation q, IReadOnlyList<(int Channel, double Scale)> channels)
    {
        var kn = Weights.Read(l);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        if (k != q.Size)
            throw new InvalidOperationException($"{l.Name}: activation-aware rounding needs a whole-row rotation ({k} inputs, " +
            $"order {q.Size})");
        var rows = new double[channels.Count][];
        var weights = new double[channels.Count];
        for (int a = 0; a < channels.Count; a++)
        {
            rows[a] = new double[k];
            rows[a][channels[a].Channel] = 1;
            q.ApplyRow(rows[a]);                  // e_f·Q: row f of Q
            weights[a] = channels[a].Scale * channels[a].Scale - 1;
        }
        Parallel.For(0, n, () => (new double[k], new float[k]), (c, _, buf) =>
        {
            var (col, rounded) = buf;
            for (int j = 0; j < k; j++) col[j] = kn[(long)j * n + c];
            q.ApplyRow(col);                      // (w_cᵀ·Q)ᵀ = Qᵀ·w_c, exact in double
            AwareRounding.Round(col, rounded, rows, weights);
            for (int j = 0; j < k; j++) kn[(long)j * n + c] = rounded[j];
            return buf;
        }, _ => { });
        Weights.Write(g, l, kn);
    }

    /// <summary>A constant vector (a bias) rotated: v ← v·diag(Q, …).</summary>
    public static void Vector(Graph g, Value v, Rotation q)
    {
        var t = v.Initializer!;
        var b = t.ToFloat32();
        q.ApplyChunks(b);
        g.SetInitializer(v, Tensor.FromFloats(v.Name, t.Dims, b));
    }
}

/// <summary>The options of <see cref="RotateResidualPass"/>.</summary>
public sealed record RotateResidualOptions : PassOptions
{
    [Option("seed of the random signs")]
    public int Seed { get; init; }

    [Option("float32 rounding of the rotated readers: aware of massive-activation channels (auto: when calibration data is given)",
        Choices = "auto|nearest|activation_aware")]
    public string Rounding { get; init; } = "auto";
}
