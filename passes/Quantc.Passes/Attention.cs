using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;

namespace Quantc.Passes;

/// <summary>
/// The keys or the values of one attention: the slots where new (this step's) tensors enter, the cache
/// graph inputs (past) and outputs (present) on the way to the attention, and the values in between.
/// </summary>
internal sealed class CacheStream
{
    /// <summary>Where new keys (values) enter: each a node input that reads a tensor computed this step.</summary>
    public List<Use> Sources { get; } = [];

    /// <summary>Past-cache graph inputs joined with the new tensors.</summary>
    public List<string> CacheInputs { get; } = [];

    /// <summary>Present-cache graph outputs on the way.</summary>
    public List<string> CacheOutputs { get; } = [];

    /// <summary>Node outputs between the sources and the attention (the present cache among them).</summary>
    public List<Value> Values { get; } = [];

    /// <summary>True when the last axis is one head (eager attention, [b, heads, t, d]); false when it is whole heads (GroupQueryAttention's [b, t, heads·d]).</summary>
    public required bool OneHeadLast { get; init; }
}

/// <summary>
/// One attention found in a graph: eager attention (MatMul(Q, Kᵀ) → scale/mask → Softmax → MatMul(P, V), as
/// torch exports it, with the keys and values followed back through repeat-kv, transpose and the cache
/// Concat) or com.microsoft GroupQueryAttention. The query enters at <see cref="Query"/>; keys and values
/// are <see cref="Keys"/> and <see cref="Values"/>, or null with the reason.
/// </summary>
internal sealed class AttentionSite
{
    public required string Name { get; init; }
    public required string Form { get; init; }
    public required Node Node { get; init; }

    /// <summary>The size of a head (the axis queries and keys are contracted over).</summary>
    public long? HeadDim { get; init; }

    /// <summary>The query's slot (it enters after RoPE: the score MatMul's first input, GroupQueryAttention's input 0).</summary>
    public required Use Query { get; init; }

    /// <summary>True when the query's last axis is one head.</summary>
    public required bool QueryOneHeadLast { get; init; }

    public CacheStream? Keys { get; init; }
    public string? KeysWhy { get; init; }
    public CacheStream? Values { get; init; }
    public string? ValuesWhy { get; init; }

    /// <summary>Why queries and keys are not available after RoPE (the op applies it inside), else null.</summary>
    public string? RopeInside { get; init; }

    /// <summary>Every attention of <paramref name="g"/>, in graph order.</summary>
    public static List<AttentionSite> Find(Graph g)
    {
        var sites = new List<AttentionSite>();
        var taken = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in g.Nodes)
        {
            AttentionSite? s = n.Is("GroupQueryAttention", "com.microsoft") ? GroupQuery(n, taken) : n.Is("MatMul") ? Eager(n, taken) : null;
            if (s is not null) sites.Add(s);
        }
        return sites;
    }

    private static string NameOf(Node n, HashSet<string> taken) => LayerNames.Unique(LayerNames.FromScope(n.Name) ?? n.Name, taken);

    private static AttentionSite? GroupQuery(Node n, HashSet<string> taken)
    {
        long heads = n.GetInt("num_heads", 0), kvHeads = n.GetInt("kv_num_heads", 0);
        Value? In(int i) => i < n.Inputs.Count ? n.Inputs[i] : null;
        Value? Out(int i) => i < n.Outputs.Count ? n.Outputs[i] : null;
        long? d = In(3)?.Shape is { Length: 4 } ps && ps[3] is > 0 and var pd ? pd : null;
        string? common = heads <= 0 || kvHeads <= 0 ? "num_heads or kv_num_heads missing"
            : In(1) is null || In(2) is null ? "packed QKV (no separate key and value inputs)"
            : d is null ? "the head size is unknown (past_key has no static last dimension)"
            : null;
        CacheStream? Stream(int input, int past, int present, out string? why)
        {
            why = common;
            if (why is not null) return null;
            if (In(past) is { } p && !(p.IsGraphInput && !p.IsInitializer)) { why = $"past '{p.Name}' is not a graph input"; return null; }
            if (Out(present) is { } o && (o.Uses.Count > 0 || !o.IsGraphOutput)) { why = $"present '{o.Name}' is read inside the graph"; return null; }
            var s = new CacheStream { OneHeadLast = false };
            s.Sources.Add(new Use(n, input));
            if (In(past) is { } pp) s.CacheInputs.Add(pp.Name);
            if (Out(present) is { } po) { s.CacheOutputs.Add(po.Name); s.Values.Add(po); }
            return s;
        }
        var keys = Stream(1, 3, 1, out var kw);
        var values = Stream(2, 4, 2, out var vw);
        return new AttentionSite
        {
            Name = NameOf(n, taken), Form = "GroupQueryAttention", Node = n, HeadDim = d,
            Query = new Use(n, 0), QueryOneHeadLast = false,
            Keys = keys, KeysWhy = kw, Values = values, ValuesWhy = vw,
            RopeInside = n.GetInt("do_rotary", 0) != 0 ? "GroupQueryAttention applies RoPE inside (do_rotary = 1), so its query and key inputs are before RoPE" : null,
        };
    }

    /// <summary>MatMul(Q, Kᵀ) whose product reaches a Softmax over the last axis (through scale and mask) that feeds MatMul(P, V).</summary>
    private static AttentionSite? Eager(Node mm, HashSet<string> taken)
    {
        if (mm.Inputs.Count != 2 || mm.Inputs.Any(x => x is null || Constants.IsConstant(x))) return null;
        var x = mm.Output;
        Node? softmax = null;
        for (int step = 0; step < 6 && softmax is null; step++)
        {
            if (x.Uses.Count != 1) return null;
            var (u, slot) = x.Uses[0];
            if (u.Is("Softmax")) { softmax = u; break; }
            bool scale = (u.Is("Mul") || (u.Is("Div") && slot == 0)) && u.Inputs.Any(i => Constants.Of(i) is { ElementCount: 1 });
            if (!scale && !u.Is("Add") && !u.Is("Cast")) return null;
            x = u.Output;
        }
        if (softmax is null) return null;
        long axis = softmax.GetInt("axis", -1);
        if (axis != -1 && !(RankOf(mm.Output) is int r && axis == r - 1)) return null;
        var pv = softmax.Output.Uses.FirstOrDefault(u => u.Node.Is("MatMul") && u.InputIndex == 0).Node;
        if (pv?.Inputs[1] is not { } vIn || Constants.IsConstant(vIn)) return null;

        var keys = Follow(mm.Inputs[1]!, new Use(mm, 1), transposed: true, out var kw, out long? kd);
        var values = Follow(vIn, new Use(pv, 1), transposed: false, out var vw, out long? vd);
        return new AttentionSite
        {
            Name = NameOf(mm, taken), Form = "eager", Node = mm, HeadDim = kd ?? vd,
            Query = new Use(mm, 0), QueryOneHeadLast = true,
            Keys = keys, KeysWhy = kw, Values = values, ValuesWhy = vw,
        };
    }

    /// <summary>The rank of <paramref name="v"/>: declared, or derived through the shape ops of a cache path; null when unknown.</summary>
    private static int? RankOf(Value? v, int depth = 0)
    {
        if (v is null || depth > 16) return null;
        if (v.Shape is { } s) return s.Length;
        var n = v.Producer;
        if (n is null || !n.IsOnnxDomain) return null;
        switch (n.OpType)
        {
            case "Transpose": return n.GetInts("perm")?.Count;
            case "Reshape": return Constants.Ints(Constants.Of(n.Inputs[1]))?.Length;
            case "Unsqueeze":
            {
                var axes = Constants.Ints(Constants.Of(n.Inputs.Count > 1 ? n.Inputs[1] : null)) ?? n.GetInts("axes")?.ToArray();
                return axes is null || RankOf(n.Inputs[0], depth + 1) is not int r ? null : r + axes.Length;
            }
            case "Expand":
            {
                var shape = Constants.Ints(Constants.Of(n.Inputs[1]));
                return shape is null || RankOf(n.Inputs[0], depth + 1) is not int r ? null : Math.Max(r, shape.Length);
            }
            case "Concat": case "Add": case "Mul": case "Sub": case "Neg": case "MatMul": case "Cast": case "Softmax":
                return n.Inputs.Select(i => Constants.IsConstant(i) ? null : RankOf(i, depth + 1)).FirstOrDefault(r => r is not null);
            default: return null;
        }
    }

    /// <summary>The static last dimension of <paramref name="v"/> (declared, or a Reshape's constant), else null.</summary>
    private static long? LastOf(Value v)
    {
        if (v.Shape is { Length: > 0 } s && s[^1] is > 0 and var d) return d;
        if (v.Producer is { } p && p.Is("Reshape") && Constants.Ints(Constants.Of(p.Inputs[1])) is { Length: > 0 } shape && shape[^1] > 0) return shape[^1];
        return null;
    }

    /// <summary>
    /// Follows the keys (values) back from the attention's MatMul input: a Transpose swapping the last two
    /// axes (keys only), then ops that keep every head's d values together on the last axis — Transpose
    /// keeping the last axis, Expand not broadcasting it, Unsqueeze not inserting a new last axis, Concat
    /// along another axis, Reshape where it merges repeat-kv's axes back (its input comes through those ops
    /// from a Concat with a past input whose last dimension is the Reshape's) — to the tensors computed
    /// this step (the sources) and the past-cache graph inputs. Every value on the way must be read only on
    /// the way (a graph output is the present cache). Each source's last axis must be one head: its declared
    /// or Reshape-constant last dimension, or that of a past input it is concatenated with.
    /// </summary>
    private static CacheStream? Follow(Value start, Use attention, bool transposed, out string? why, out long? headDim)
    {
        var st = new FollowState();
        var s = Follow(start, attention, transposed, st);
        why = st.Why;
        headDim = st.HeadDim;
        return s;
    }

    private sealed class FollowState { public string? Why; public long? HeadDim; }

    private static CacheStream? Follow(Value start, Use attention, bool transposed, FollowState st)
    {
        var s = new CacheStream { OneHeadLast = true };
        var onPath = new HashSet<Node>(ReferenceEqualityComparer.Instance) { attention.Node };
        var stack = new Stack<(Value V, bool T, Use Reader)>();
        stack.Push((start, transposed, attention));
        bool Head(long d, string what)
        {
            if (st.HeadDim is { } h && h != d) { st.Why = $"{what}: last dimension {d}, not the head size {h}"; return false; }
            st.HeadDim = d;
            return true;
        }
        while (stack.Count > 0)
        {
            var (v, t, reader) = stack.Pop();
            if (v.IsGraphInput && !v.IsInitializer)
            {
                if (t) { st.Why = $"past '{v.Name}' enters transposed"; return null; }
                if (!s.CacheInputs.Contains(v.Name)) s.CacheInputs.Add(v.Name);
                if (v.Shape is not { Length: > 0 } sh || sh[^1] is not > 0) { st.Why = $"past '{v.Name}' has no static last dimension"; return null; }
                if (!Head(sh[^1]!.Value, $"past '{v.Name}'")) return null;
                continue;
            }
            var n = v.Producer;
            var next = new List<(Value, bool)>();
            string? bad = null;
            if (n is not null && n.IsOnnxDomain && !Constants.IsConstant(v))
            {
                switch (n.OpType)
                {
                    case "Transpose" when n.GetInts("perm") is { Count: >= 2 } perm:
                    {
                        int r = perm.Count;
                        if (t && perm[^1] == r - 2 && perm[^2] == r - 1) next.Add((n.Inputs[0]!, false));
                        else if (!t && perm[^1] == r - 1) next.Add((n.Inputs[0]!, false));
                        break;
                    }
                    case "Expand" when !t:
                    {
                        var shape = Constants.Ints(Constants.Of(n.Inputs[1]));
                        if (shape is null || shape.Length == 0 || shape[^1] != 1) { bad = $"Expand '{n.Name}' may broadcast the last axis"; break; }
                        next.Add((n.Inputs[0]!, false));
                        break;
                    }
                    case "Unsqueeze" when !t:
                    {
                        var axes = Constants.Ints(Constants.Of(n.Inputs.Count > 1 ? n.Inputs[1] : null)) ?? n.GetInts("axes")?.ToArray();
                        if (axes is null || RankOf(v) is not int r) { bad = $"Unsqueeze '{n.Name}': axes or rank unknown"; break; }
                        if (axes.Any(a => a == -1 || a == r - 1)) { bad = $"Unsqueeze '{n.Name}' inserts a new last axis"; break; }
                        next.Add((n.Inputs[0]!, false));
                        break;
                    }
                    case "Concat" when !t:
                    {
                        long axis = n.GetInt("axis", 0);
                        if (RankOf(v) is not int r || axis == -1 || axis == r - 1 || axis < -r || axis >= r) { bad = $"Concat '{n.Name}' joins along the last axis (or an axis of unknown place)"; break; }
                        foreach (var ci in n.Inputs) if (ci is not null) next.Add((ci, false));
                        break;
                    }
                    case "Reshape" when !t && RepeatKvMerge(n):
                        next.Add((n.Inputs[0]!, false));
                        break;
                }
            }
            if (bad is not null) { st.Why = bad; return null; }
            if (next.Count == 0)
            {
                // A source: new keys (values) computed this step; its last axis must be one head.
                if (t) { st.Why = $"'{v.Name}' ({n?.OpType ?? "input"}) is not a transposed key"; return null; }
                long? d = LastOf(v);
                if (d is null && reader.Node.Is("Concat"))
                    d = reader.Node.Inputs.Where(i => i is not null && i.IsGraphInput && !i.IsInitializer).Select(i => i!.Shape is { Length: > 0 } ps ? ps[^1] : null).FirstOrDefault(x => x is > 0);
                if (d is null) { st.Why = $"cannot tell that '{v.Name}' ends in one head"; return null; }
                if (!Head(d.Value, $"'{v.Name}'")) return null;
                s.Sources.Add(reader);
                continue;
            }
            if (!onPath.Add(n!)) continue;   // reached twice (its inputs are already queued)
            s.Values.Add(v);
            // Pushed in reverse so the sources come out in input order.
            for (int i = next.Count - 1; i >= 0; i--)
            {
                var (x, xt) = next[i];
                stack.Push((x, xt, new Use(n!, n!.OpType == "Concat" ? ConcatSlot(n, x, i) : 0)));
            }
        }
        if (s.Sources.Count == 0) { st.Why = "no tensor computed this step reaches the attention"; return null; }
        foreach (var v in s.Values)
        {
            foreach (var u in v.Uses)
                if (!onPath.Contains(u.Node)) { st.Why = $"'{v.Name}' is also read by {u.Node.OpType} '{u.Node.Name}'"; return null; }
            if (v.IsGraphOutput) s.CacheOutputs.Add(v.Name);
        }
        return s;
    }

    /// <summary>The i-th non-empty input slot of a Concat (the slot of the i-th value collected from it).</summary>
    private static int ConcatSlot(Node concat, Value x, int i)
    {
        int k = -1;
        for (int slot = 0; slot < concat.Inputs.Count; slot++)
            if (concat.Inputs[slot] is not null && ++k == i) return slot;
        throw new InvalidOperationException($"Concat '{concat.Name}' has no input {i} ('{x.Name}')");
    }

    /// <summary>
    /// Reshape [.., d] whose input comes through Unsqueeze/Expand/last-axis-keeping Transpose from a Concat with a
    /// past graph input of static last dimension d: repeat-kv's merge of the KV-head and repeat axes.
    /// </summary>
    private static bool RepeatKvMerge(Node reshape)
    {
        var shape = Constants.Ints(Constants.Of(reshape.Inputs[1]));
        if (shape is null || shape.Length == 0 || shape[^1] <= 0) return false;
        var x = reshape.Inputs[0];
        for (int depth = 0; depth < 8 && x?.Producer is { } p && p.IsOnnxDomain; depth++)
        {
            if (p.Is("Unsqueeze") || p.Is("Expand") || (p.Is("Transpose") && p.GetInts("perm") is { Count: > 0 } perm && perm[^1] == perm.Count - 1)) { x = p.Inputs[0]; continue; }
            if (p.Is("Concat"))
                return p.Inputs.Any(i => i is not null && i.IsGraphInput && !i.IsInitializer && i.Shape is { Length: > 0 } ps && ps[^1] == shape[^1]);
            return false;
        }
        return false;
    }
}
