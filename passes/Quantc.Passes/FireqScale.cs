using System.Globalization;
using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// FireqScale (FireQ's channel-wise scaling before INT4, Baek et al. 2025): per input channel j of a layer group
/// s_j = c / mean_i |W_ij| over the concatenated consumers' weights, W' = diag(s)·W and the producer divided by s, so that every
/// input channel's mean weight magnitude is c (INT4's coarse grid then treats the channels alike). The inputs that a norm
/// feeds only to layers matching <c>norm_layers</c> (gate/up: c = <c>gate_up</c>, 0.0096, γ (and β) divided) and the inputs
/// of layers matching <c>down_layers</c> that are act(gate) ⊙ up (c = <c>down</c>, 0.015, up's columns divided); q/k/v and
/// o are not scaled this way. Then each v_proj's output times <c>value_scale</c> (0.9) and the o_proj that reads it (found
/// through the heads, as rotate_head does) times its inverse. Function-preserving (the logits within float rounding; the
/// value cache holds 0.9·V, as FireQ's does — the model's metadata says so, <c>quantc.value_cache_scale</c>).
/// </summary>
public sealed class FireqScalePass(double gateUp, double down, double valueScale, string normLayers, string downLayers, string valueLayers)
    : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<FireqScaleOptions>("fireq_scale", PassKind.FunctionPreserving,
        "FireQ: channel-wise scaling s_j = c / mean|W_j| into gate/up (via the norm) and down (via up), v_proj × 0.9 and o_proj × 1/0.9",
        o => new FireqScalePass(o.GateUp, o.Down, o.ValueScale, o.NormLayers, o.DownLayers, o.ValueLayers));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>The metadata key naming the value-cache tensors held scaled: <c>FACTOR:NAME,NAME…</c>.</summary>
    public const string ValueCacheScaleKey = CacheTransforms.ValueScaleKey;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        int scaled = 0;
        foreach (var norm in map.Norms)
        {
            var readers = NormReaders.Of(norm, map, out string? why);
            if (readers is null || !readers.All(r => Regex.IsMatch(r.Name, normLayers))) continue;
            var s = Factors(readers, gateUp);
            SmoothPass.DivideNorm(g, norm, s);
            Apply(ctx, g, readers, s, gateUp, norm.Name, [norm.Output]);
            scaled++;
        }
        foreach (var l in map.Linears.Where(l => Regex.IsMatch(l.Name, downLayers)))
        {
            if (SmoothPass.UpProjection(l, map) is not { } up)
                { ctx.Log.Add($"fireq_scale: {l.Name} not scaled: its input is not act(gate) ⊙ up with up read only there"); continue; }
            var s = Factors([l], down);
            SmoothPass.DivideColumns(g, up, s);
            Apply(ctx, g, [l], s, down, up.Name, [up.Node.Outputs[0]!, up.Output, l.Input]);
            scaled++;
        }
        if (scaled == 0)
            ctx.Notice($"fireq_scale: no channel scaling: no norm feeds only layers matching {normLayers} and no layer matching " +
                $"{downLayers} reads an act(gate) ⊙ up product ({map.Norms.Count} norms, {map.Linears.Count} linear layers)");
        if (valueScale != 1) ScaleValues(ctx, g, map);
    }

    /// <summary>s_j = c / mean_i |W_ij| over every reader's row j (1 for an all-zero row).</summary>
    private static float[] Factors(IReadOnlyList<LinearLayer> readers, double c)
    {
        int k = (int)readers[0].InFeatures;
        var sum = new double[k];
        long count = 0;
        foreach (var r in readers)
        {
            var w = Weights.Read(r);
            int n = (int)r.OutFeatures;
            for (int j = 0; j < k; j++) for (int i = 0; i < n; i++) sum[j] += Math.Abs(w[j * n + i]);
            count += n;
        }
        return sum.Select(v => v == 0 ? 1f : (float)(c / (v / count))).ToArray();
    }

    private static void Apply(PassContext ctx, Graph g, IReadOnlyList<LinearLayer> readers, float[] s, double c, string via,
        Value[] changed)
    {
        foreach (var r in readers)
        {
            var w = Weights.Read(r);
            Smoothing.ScaleRows(w, (int)r.InFeatures, (int)r.OutFeatures, s);
            Weights.Write(g, r, w);
            ctx.Plan[r.Name].Transforms.Add(string.Create(CultureInfo.InvariantCulture, $"FireQ channel scaling c = {c:G3} via {via}"));
            ctx.ReleaseLayerCopies();
        }
        foreach (var v in changed) ctx.Provenance.RecordTransformed(v.Name, "scaled");
        ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
            $"fireq_scale: {string.Join(", ", readers.Select(r => r.Name))} via {via}: c = {c:G3}, s in [{s.Min():G3}, {s.Max():G3}]"));
    }

    private void ScaleValues(PassContext ctx, Graph g, ModelMap map)
    {
        var cache = new List<string>();
        int done = 0;
        foreach (var v in map.Linears.Where(l => Regex.IsMatch(l.Name, valueLayers)))
        {
            var region = map.HeadRegionOf(v, out string? why);
            var (readers, values, cacheIo) = region is not null
                ? (region.Readers, region.Values, region.GraphOutputs.Concat(region.GraphInputs).ToList())
                : ThroughAttention(v, map) is { } t ? t : default;
            if (readers is null) { ctx.Log.Add($"fireq_scale: {v.Name} not scaled by {valueScale}: {why}"); continue; }
            float f = (float)valueScale;
            ScaleWeight(g, v, f, bias: true);
            foreach (var o in readers)
            {
                ScaleWeight(g, o, 1 / f, bias: false);
                ctx.Plan[o.Name].Transforms.Add(string.Create(CultureInfo.InvariantCulture, $"FireQ: input × 1/{valueScale:G3}"));
            }
            ctx.Plan[v.Name].Transforms.Add(string.Create(CultureInfo.InvariantCulture, $"FireQ: output × {valueScale:G3}"));
            foreach (var x in values) if (!x.IsGraphOutput) ctx.Provenance.RecordTransformed(x.Name, "scaled");
            cache.AddRange(cacheIo);
            done++;
        }
        if (done == 0) { ctx.Log.Add($"fireq_scale: no layer matching {valueLayers} scaled by {valueScale}"); return; }
        ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
            $"fireq_scale: {done} value projections × {valueScale:G3}, their readers × " +
            $"1/{valueScale:G3}{(cache.Count > 0 ? $"; value cache held × {valueScale:G3}: {string.Join(", ", cache)}" : "")}"));
        if (cache.Count > 0)
            ctx.Model.SetMetadata(ValueCacheScaleKey,
                string.Create(CultureInfo.InvariantCulture, $"{valueScale:R}:{string.Join(",", cache)}"));
    }

    /// <summary>
    /// A scalar factor on the values passes through any attention, so where the heads cannot be followed (an ONNX Attention
    /// fed 3-D tensors) it is enough that v_proj's output is read only as the values of one ONNX Attention or GroupQueryAttention
    /// whose output only linear layers read: those, the values in between and the value cache (present out, past in).
    /// </summary>
    private static (List<LinearLayer> Readers, List<Value> Values, List<string> Cache)? ThroughAttention(LinearLayer v, ModelMap map)
    {
        if (v.Output.IsGraphOutput || v.Output.Uses.Count != 1) return null;
        var (att, slot) = v.Output.Uses[0];
        bool onnx = att.Is("Attention") && att.IsOnnxDomain, gqa = att.Is("GroupQueryAttention", "com.microsoft");
        if (!(onnx || gqa) || slot != 2) return null;
        var y = att.Outputs[0]!;
        var readers = map.Readers(y).ToList();
        if (readers.Count == 0 || readers.Count != y.Uses.Count || y.IsGraphOutput) return null;
        int past = onnx ? 5 : 4;
        var cache = new List<string>();
        if (att.Outputs.Count > 2 && att.Outputs[2] is { } present)
        {
            if (present.Uses.Count > 0) return null;
            if (present.IsGraphOutput) cache.Add(present.Name);
        }
        if (past < att.Inputs.Count && att.Inputs[past] is { } p)
        {
            if (!p.IsGraphInput || p.IsInitializer) return null;
            cache.Add(p.Name);
        }
        return (readers, [v.Output], cache);
    }

    private static void ScaleWeight(Graph g, LinearLayer l, float f, bool bias)
    {
        var w = Weights.Read(l);
        for (int i = 0; i < w.Length; i++) w[i] *= f;
        Weights.Write(g, l, w);
        if (bias && l.Bias?.Initializer is { } bt)
            g.SetInitializer(l.Bias, Tensor.FromFloats(l.Bias.Name, bt.Dims, bt.ToFloat32().Select(b => b * f).ToArray()));
    }
}

/// <summary>The options of <see cref="FireqScalePass"/>.</summary>
public sealed record FireqScaleOptions : PassOptions
{
    [Option("c of the inputs a norm feeds to layers matching norm_layers (FireQ: 0.0096)", Min = 0, MinExclusive = true)]
    public double GateUp { get; init; } = 0.0096;

    [Option("c of the act(gate) ⊙ up inputs of layers matching down_layers (FireQ: 0.015)", Min = 0, MinExclusive = true)]
    public double Down { get; init; } = 0.015;

    [Option("factor of the value projections' outputs, its inverse into their readers (FireQ: 0.9; 1: off)", Min = 0, MinExclusive = true)]
    public double ValueScale { get; init; } = 0.9;

    [Option("a norm is scaled when every layer it feeds matches this", Regex = true)]
    public string NormLayers { get; init; } = "(gate_proj|up_proj)$";

    [Option("layers whose act(gate) ⊙ up input is scaled", Regex = true)]
    public string DownLayers { get; init; } = "down_proj$";

    [Option("the value projections", Regex = true)]
    public string ValueLayers { get; init; } = "v_proj$";
}
