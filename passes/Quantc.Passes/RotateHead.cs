using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;

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
    /// those outputs (and applies it to a past it feeds); <see cref="CacheRotations"/> reads it.
    /// </summary>
    public const string CacheMetadataKey = CacheRotations.ValueKey;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var done = new HashSet<LinearLayer>(ReferenceEqualityComparer.Instance);
        var rotations = new Dictionary<long, Rotation>();
        var cacheTensors = new List<(string Name, long Size)>();
        foreach (var v in map.Linears.Where(l => Regex.IsMatch(l.Name, layers)))
        {
            var region = HeadRegion.Follow(v, map, out string? why);
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
        }
        if (cacheTensors.Count > 0)
            ctx.Model.SetMetadata(CacheMetadataKey,
                string.Join("|",
                cacheTensors.GroupBy(o => o.Size).Select(gr => $"{gr.Key}:{seed}:{string.Join(",", gr.Select(o => o.Name).Distinct())}")));
    }
}

/// <summary>Where a v_proj's output goes while its last axis stays in whole heads, and which linear layers read it at the end.</summary>
internal sealed class HeadRegion
{
    public required long HeadSize { get; init; }
    public List<LinearLayer> Readers { get; } = [];
    public List<string> GraphInputs { get; } = [];
    public List<string> GraphOutputs { get; } = [];

    /// <summary>The values of the region (all in the rotated per-head basis).</summary>
    public List<Value> Values { get; } = [];

    /// <summary>The region of <paramref name="v"/>, or null with the reason.</summary>
    public static HeadRegion? Follow(LinearLayer v, ModelMap map, out string? why)
    {
        why = null;
        long width = v.OutFeatures;
        long? hd = HeadSizeAt(v.Output, width);
        if (hd is not { } d)
            { why = "cannot tell the head size (its output feeds neither a Reshape into heads nor GroupQueryAttention)"; return null; }
        var region = new HeadRegion { HeadSize = d };
        // Each value in the region with the size of its last axis (a multiple of d) and its rank (0 = unknown).
        var seen = new Dictionary<Value,
            (long Last, int Rank)>(ReferenceEqualityComparer.Instance) { [v.Output] = (width, v.Output.Shape?.Length ?? 0) };
        var queue = new Queue<Value>([v.Output]);
        var visitedNodes = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        string? fail = null;

        void Add(Value? y, long last, int rank)
        {
            if (y is null || fail is not null) return;
            if (last % d != 0) { fail = $"'{y.Name}' ends in {last} values, not whole heads of {d}"; return; }
            if (seen.TryAdd(y, (last, rank))) queue.Enqueue(y);
        }

        // Other inputs of a node joining the region: already in it, or a graph input (the past cache, read in the rotated basis).
        bool JoinOthers(Node n, int[] slots, Value from)
        {
            foreach (int i in slots)
            {
                if (i >= n.Inputs.Count || n.Inputs[i] is not { } x || ReferenceEquals(x, from) || seen.ContainsKey(x)) continue;
                if (x.IsGraphInput && !x.IsInitializer)
                    { if (!region.GraphInputs.Contains(x.Name)) region.GraphInputs.Add(x.Name); continue; }
                fail = $"{n.OpType} '{n.Name}' joins '{x.Name}', which is neither rotated nor a graph input";
                return false;
            }
            return true;
        }

        while (queue.Count > 0 && fail is null)
        {
            var x = queue.Dequeue();
            var (last, rank) = seen[x];
            if (x.IsGraphOutput) region.GraphOutputs.Add(x.Name);
            foreach (var use in x.Uses)
            {
                var n = use.Node;
                if (fail is not null) break;
                var reader = map.Linears.FirstOrDefault(l => ReferenceEquals(l.Node, n) && ReferenceEquals(l.Input, x));
                if (reader is not null)
                {
                    if (reader.InFeatures % d != 0) { fail = $"{reader.Name} reads {reader.InFeatures} features, not whole heads"; break; }
                    if (reader.Weight.Uses.Count != 1) { fail = $"{reader.Name}'s weight is shared"; break; }
                    if (!region.Readers.Contains(reader)) region.Readers.Add(reader);
                    continue;
                }
                if (!visitedNodes.Add(n) && !n.Is("Concat")) continue;
                switch (n.OpType)
                {
                    case "Reshape" when n.IsOnnxDomain && use.InputIndex == 0:
                    {
                        var shape = Constants.Ints(Constants.Of(n.Inputs[1]));
                        if (shape is null || shape.Length == 0 || shape[^1] < 0)
                            { fail = $"Reshape '{n.Name}' has no constant last dimension"; break; }
                        long outLast = shape[^1] == 0 && n.GetInt("allowzero", 0) == 0 ? last : shape[^1];
                        Add(n.Output, outLast, shape.Length);
                        break;
                    }
                    case "Transpose" when n.IsOnnxDomain:
                    {
                        var perm = n.GetInts("perm");
                        if (perm is null || perm[^1] != perm.Count - 1) { fail = $"Transpose '{n.Name}' moves the last axis"; break; }
                        Add(n.Output, last, perm.Count);
                        break;
                    }
                    case "Concat" when n.IsOnnxDomain:
                    {
                        if (seen.ContainsKey(n.Output)) break;
                        long axis = n.GetInt("axis", 0);
                        if (axis == -1 || (axis >= 0 && (rank == 0 || axis == rank - 1)) || axis < -1)
                            { fail = $"Concat '{n.Name}' joins along the last axis (or an axis of unknown place)"; break; }
                        if (!JoinOthers(n, Enumerable.Range(0, n.Inputs.Count).ToArray(), x)) break;
                        Add(n.Output, last, rank);
                        break;
                    }
                    case "Unsqueeze" when n.IsOnnxDomain && use.InputIndex == 0:
                    {
                        var axes = Constants.Ints(Constants.Of(n.Inputs.Count > 1 ? n.Inputs[1] : null)) ?? n.GetInts("axes")?.ToArray();
                        if (axes is null || rank == 0) { fail = $"Unsqueeze '{n.Name}': axes or rank unknown"; break; }
                        int r = rank + axes.Length;
                        if (axes.Any(a => a == -1 || a == r - 1)) { fail = $"Unsqueeze '{n.Name}' inserts a new last axis"; break; }
                        Add(n.Output, last, r);
                        break;
                    }
                    case "Expand" when n.IsOnnxDomain && use.InputIndex == 0:
                    {
                        var shape = Constants.Ints(Constants.Of(n.Inputs[1]));
                        if (shape is null || shape.Length == 0 || (shape[^1] != 1 && shape[^1] != last))
                            { fail = $"Expand '{n.Name}' may broadcast the last axis"; break; }
                        Add(n.Output, last, Math.Max(rank, shape.Length));
                        break;
                    }
                    case "MatMul" when n.IsOnnxDomain && use.InputIndex == 1:
                    {
                        // P·V: rows of V are mixed, its last axis is not; P itself must not be rotated.
                        if (seen.ContainsKey(n.Inputs[0]!)) { fail = $"MatMul '{n.Name}' multiplies two rotated values"; break; }
                        Add(n.Output, last, rank);
                        break;
                    }
                    case "GroupQueryAttention" when n.Domain == "com.microsoft" && use.InputIndex is 2 or 4:
                    {
                        long kvHeads = n.GetInt("kv_num_heads", 0), heads = n.GetInt("num_heads", 0);
                        if (kvHeads <= 0 || heads <= 0 || last != kvHeads * d)
                            { fail = $"GroupQueryAttention '{n.Name}': value width {last} is not kv_num_heads × {d}"; break; }
                        if (!JoinOthers(n, [2, 4], x)) break;
                        Add(n.Outputs[0], heads * d, 3);
                        if (n.Outputs.Count > 2) Add(n.Outputs[2], d, 4);
                        break;
                    }
                    default:
                        fail = $"'{x.Name}' feeds {n.OpType} '{n.Name}' (input {use.InputIndex}), which does not keep heads whole";
                        break;
                }
            }
        }
        if (fail is null && region.Readers.Count == 0) fail = "its output reaches no linear layer";
        if (fail is not null) { why = fail; return null; }
        region.Values.AddRange(seen.Keys);
        return region;
    }

    /// <summary>The head size from the first op after v_proj: a Reshape [.., heads, hd] or GroupQueryAttention's kv_num_heads.</summary>
    private static long? HeadSizeAt(Value y, long width)
    {
        foreach (var use in y.Uses)
        {
            var n = use.Node;
            if (n.Is("Reshape") && use.InputIndex == 0 && Constants.Ints(Constants.Of(n.Inputs[1])) is { Length: >= 2 } s && s[^1] > 0 &&
                width % s[^1] == 0 && s[^1] < width)
                return s[^1];
            if (n.Is("GroupQueryAttention", "com.microsoft") && use.InputIndex == 2 && n.GetInt("kv_num_heads", 0) is > 0 and var kv &&
                width % kv == 0)
                return width / kv;
        }
        return null;
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
