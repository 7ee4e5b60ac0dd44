using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// Where a v_proj's output goes while its last axis stays in whole heads, and which linear layers read it at the end
/// (QuaRot's R2 rotates exactly this region). Followed forward through the ops that keep heads whole (the rules of
/// <see cref="HeadAxis"/>, shared with the cache streams): Reshape with a constant last dimension, Transpose keeping
/// the last axis, Concat with the past, Unsqueeze/Expand of repeat-kv, MatMul(P, V), GroupQueryAttention.
/// </summary>
public sealed class HeadRegion
{
    public required long HeadSize { get; init; }
    public List<LinearLayer> Readers { get; } = [];
    public List<string> GraphInputs { get; } = [];
    public List<string> GraphOutputs { get; } = [];

    /// <summary>The values of the region (all in the rotated per-head basis).</summary>
    public List<Value> Values { get; } = [];

    /// <summary>The region of <paramref name="v"/>, or null with the reason.</summary>
    internal static HeadRegion? Follow(LinearLayer v, ModelMap map, out string? why)
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
                        if (!HeadAxis.TransposeKeepsLast(n)) { fail = $"Transpose '{n.Name}' moves the last axis"; break; }
                        Add(n.Output, last, n.GetInts("perm")!.Count);
                        break;
                    case "Concat" when n.IsOnnxDomain:
                    {
                        if (seen.ContainsKey(n.Output)) break;
                        if ((fail = HeadAxis.Concat(n, rank == 0 ? null : rank)) is not null) break;
                        if (!JoinOthers(n, Enumerable.Range(0, n.Inputs.Count).ToArray(), x)) break;
                        Add(n.Output, last, rank);
                        break;
                    }
                    case "Unsqueeze" when n.IsOnnxDomain && use.InputIndex == 0:
                    {
                        if ((fail = HeadAxis.Unsqueeze(n, rank == 0 ? null : rank, outputRank: null, out int r)) is not null) break;
                        Add(n.Output, last, r);
                        break;
                    }
                    case "Expand" when n.IsOnnxDomain && use.InputIndex == 0:
                        if ((fail = HeadAxis.Expand(n, last)) is not null) break;
                        Add(n.Output, last, Math.Max(rank, Constants.Ints(Constants.Of(n.Inputs[1]))!.Length));
                        break;
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
