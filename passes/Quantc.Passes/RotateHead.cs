using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// RotateHead (QuaRot's R2): a per-head rotation Q_h (randomised Hadamard of the head size) fused into
/// v_proj's output columns, V' = V·diag(Q_h, …, Q_h), and o_proj's input rows, W_o' = diag(Q_hᵀ, …)·W_o.
/// Attention mixes value rows over tokens and never across the head axis, so P·(V·Q_h) = (P·V)·Q_h for
/// every query head, whichever KV head it shares (GQA). The pass follows each v_proj's output through the
/// ops that keep the last axis in whole heads — Reshape (both sides a multiple of the head size), Transpose
/// keeping the last axis, Concat with the past, Unsqueeze/Expand of repeat-kv, MatMul(P, V),
/// com.microsoft GroupQueryAttention — to the linear layers that read it; anything else leaves that layer
/// alone, with the reason in the log. Function-preserving for the logits; the value cache
/// (present.*.value out, past_key_values.*.value in) is kept in the rotated basis, as QuaRot keeps it, and
/// the model's metadata says so (<c>quantc.value_cache_rotation</c>).
/// </summary>
public sealed class RotateHeadPass(string layers, int seed) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<RotateHeadOptions>("rotate_head", PassKind.FunctionPreserving,
        "QuaRot R2: per-head randomised Hadamard fused into v_proj's outputs and o_proj's inputs; the value cache stays rotated",
        o => new RotateHeadPass(o.Layers, o.Seed));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>
    /// The metadata key naming the rotation the value cache is stored in: <c>HEAD_SIZE:SEED:NAME,NAME…</c>
    /// (groups joined by <c>|</c>; the present outputs, then the past inputs); the cache is x·diag(Q, …) with
    /// Q = <see cref="Rotation.Create"/>(HEAD_SIZE, SEED). <c>quantc verify</c> undoes it before comparing
    /// those outputs (and applies it to a past it feeds); <see cref="CacheTransforms"/> reads it.
    /// </summary>
    public const string CacheMetadataKey = CacheTransforms.ValueKey;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var done = new HashSet<LinearLayer>(ReferenceEqualityComparer.Instance);
        var rotations = new Dictionary<long, Rotation>();
        var cacheTensors = new List<(string Name, long Size)>();
        foreach (var v in map.Linears.Where(l => Regex.IsMatch(l.Name, layers)))
        {
            var region = map.HeadRegionOf(v, out string? why);
            if (region is null) { ctx.Log.Add($"rotate_head: {v.Name} skipped: {why}"); continue; }
            if (region.Readers.Any(done.Contains))
                { ctx.Log.Add($"rotate_head: {v.Name} skipped: its readers are reached from another rotated layer"); continue; }
            if (!rotations.TryGetValue(region.HeadSize, out var q)) rotations[region.HeadSize] = q = Rotation.Create(region.HeadSize, seed);

            RotatedWeights.Outputs(g, v, q);                     // V·diag(Q_h, …)
            ctx.Plan[v.Name].Transforms.Add($"R2: output heads rotated ({q.Description})");
            foreach (var o in region.Readers)
            {
                RotatedWeights.Inputs(g, o, q);                  // diag(Q_hᵀ, …)·W_o
                done.Add(o);
                ctx.Plan[o.Name].Transforms.Add("R2: input heads rotated back");
            }
            foreach (var x in region.Values) if (!x.IsGraphOutput) ctx.Provenance.RecordTransformed(x.Name, "rotated");
            cacheTensors.AddRange(region.GraphOutputs.Concat(region.GraphInputs).Select(o => (o, region.HeadSize)));
            string via = region.GraphInputs.Count + region.GraphOutputs.Count > 0
                ? $"; cache in the rotated basis: {string.Join(", ", region.GraphInputs.Concat(region.GraphOutputs))}" : "";
            ctx.Log.Add($"rotate_head: {v.Name} → {string.Join(", ", region.Readers.Select(r => r.Name))} ({q.Description}, head " +
                $"size {region.HeadSize}){via}");
            if (!q.IsHadamard)
                ctx.Log.Add($"rotate_head: head size {region.HeadSize} has no Hadamard matrix: used a seeded random orthogonal matrix " +
                $"instead");
            ctx.ReleaseLayerCopies();
        }
        if (cacheTensors.Count > 0)
            ctx.Model.SetMetadata(CacheMetadataKey,
                string.Join("|",
                cacheTensors.GroupBy(o => o.Size).Select(gr => $"{gr.Key}:{seed}:{string.Join(",", gr.Select(o => o.Name).Distinct())}")));
    }
}

/// <summary>The options of <see cref="RotateHeadPass"/>.</summary>
public sealed record RotateHeadOptions : PassOptions
{
    [Option("the value projections to rotate", Regex = true)]
    public string Layers { get; init; } = "v_proj$";

    [Option("seed of the random signs")]
    public int Seed { get; init; } = 1;
}
