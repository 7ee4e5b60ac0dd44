using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// The keys or the values of one attention: the slots where new (this step's) tensors enter, the cache
/// graph inputs (past) and outputs (present) on the way to the attention, and the values in between.
/// </summary>
public sealed class CacheStream
{
    /// <summary>Where new keys (values) enter: each a node input that reads a tensor computed this step.</summary>
    public List<Use> Sources { get; } = [];

    /// <summary>Past-cache graph inputs joined with the new tensors.</summary>
    public List<string> CacheInputs { get; } = [];

    /// <summary>Present-cache graph outputs on the way.</summary>
    public List<string> CacheOutputs { get; } = [];

    /// <summary>Node outputs between the sources and the attention (the present cache among them).</summary>
    public List<Value> Values { get; } = [];

    /// <summary>True when the last axis is one head (eager attention, [b, heads, t, d]); false when it is whole heads
    /// (GroupQueryAttention's [b, t, heads·d]).</summary>
    public required bool OneHeadLast { get; init; }
}

/// <summary>
/// One attention found in a graph: eager attention (MatMul(Q, Kᵀ) → scale/mask → Softmax → MatMul(P, V), as
/// torch exports it, with the keys and values followed back through repeat-kv, transpose and the cache
/// Concat), com.microsoft GroupQueryAttention or MultiHeadAttention, or ONNX Attention (opset 23). The query enters at
/// <see cref="Query"/>; keys and values
/// are <see cref="Keys"/> and <see cref="Values"/>, or null with the reason.
/// </summary>
public sealed class AttentionSite
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

    /// <summary>Eager form: the parts around its Softmax (scores, scale, mask, PV MatMul, K/V before repeat-kv, cache Concats); null for
    /// GroupQueryAttention.</summary>
    public DecomposedAttention? Decomposed { get; init; }

    /// <summary>Every attention of <paramref name="g"/>, in graph order.</summary>
    public static List<AttentionSite> Find(Graph g) => Find(g, out _);

    /// <summary>
    /// Every attention of <paramref name="g"/>, in graph order, and <paramref name="decomposed"/>: every Softmax
    /// read by a MatMul as its first input, in graph order, with its parts — also those that are not a site
    /// (fuse_attention reports why it leaves each of them; see <see cref="DecomposedAttention.FuseWhy"/>).
    /// </summary>
    public static List<AttentionSite> Find(Graph g, out List<DecomposedAttention> decomposed)
    {
        decomposed = [];
        var bySoftmax = new Dictionary<Node, DecomposedAttention>(ReferenceEqualityComparer.Instance);
        foreach (var n in g.Nodes)
            if (n.Is("Softmax") && DecomposedAttention.At(n) is { } d) { decomposed.Add(d); bySoftmax[n] = d; }
        var sites = new List<AttentionSite>();
        var taken = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in g.Nodes)
        {
            AttentionSite? s = n.Is("GroupQueryAttention", "com.microsoft") ? Contrib(n, taken, pastKey: 3)
                : n.Is("MultiHeadAttention", "com.microsoft") ? Contrib(n, taken, pastKey: 6)
                : n.Is("Attention") && n.IsOnnxDomain ? OnnxAttention(n, taken, "Attention")
                : n.Is("CausalAttention", "ai.quantc") ? OnnxAttention(n, taken, "CausalAttention")
                : n.Is("MatMul") ? Eager(n, taken, bySoftmax) : null;
            if (s is not null) sites.Add(s);
        }
        return sites;
    }

    private static string NameOf(Node n, HashSet<string> taken) => LayerNames.Unique(LayerNames.FromScope(n.Name) ?? n.Name, taken);

    /// <summary>
    /// com.microsoft GroupQueryAttention (past_key / past_value at inputs 3 / 4) or MultiHeadAttention (6 / 7): new keys
    /// and values at inputs 1 / 2, [batch, sequence, heads · head_size]; present key / value at outputs 1 / 2.
    /// </summary>
    private static AttentionSite? Contrib(Node n, HashSet<string> taken, int pastKey)
    {
        bool gqa = n.OpType == "GroupQueryAttention";
        long heads = n.GetInt("num_heads", 0), kvHeads = gqa ? n.GetInt("kv_num_heads", 0) : heads;
        Value? In(int i) => i < n.Inputs.Count ? n.Inputs[i] : null;
        // A prefix of constant keys/values (PrefixCache) may stand between the past inputs and the op.
        Value? Past(int i) => PrefixCache.PastBehind(In(i)) ?? In(i);
        long? d = Past(pastKey)?.Shape is { Length: 4 } ps && ps[3] is > 0 and var pd ? pd : null;
        string? common = heads <= 0 || kvHeads <= 0 ? (gqa ? "num_heads or kv_num_heads missing" : "num_heads missing")
            : In(1) is null || In(2) is null ? "packed QKV (no separate key and value inputs)"
            : !gqa && In(3) is not null
                ? "MultiHeadAttention adds its bias input to the keys and values inside, so its inputs are not what enters the cache"
            : In(1)!.Shape is { Length: not 3 } ks ? $"the key input has rank {ks.Length} (not [batch, sequence, hidden])"
            : d is null ? "the head size is unknown (past_key has no static last dimension)"
            : null;
        var keys = FusedStream(n, 1, pastKey, 1, oneHeadLast: false, common, out var kw);
        var values = FusedStream(n, 2, pastKey + 1, 2, oneHeadLast: false, common, out var vw);
        return new AttentionSite
        {
            Name = NameOf(n, taken), Form = n.OpType, Node = n, HeadDim = d,
            Query = new Use(n, 0), QueryOneHeadLast = false,
            Keys = keys, KeysWhy = kw, Values = values, ValuesWhy = vw,
            RopeInside = n.GetInt("do_rotary", 0) != 0
                ? "GroupQueryAttention applies RoPE inside (do_rotary = 1), so its query and key inputs are before RoPE" : null,
        };
    }

    /// <summary>The keys (values) of a fused attention op: new ones at <paramref name="input"/>, the past graph input at
    /// <paramref name="past"/>, the present graph output at <paramref name="present"/>; null with the reason (<paramref name="common"/>
    /// first).</summary>
    private static CacheStream? FusedStream(Node n, int input, int past, int present, bool oneHeadLast, string? common, out string? why)
    {
        // A prefix of constant keys/values (PrefixCache) may stand between the past inputs and the op, and after its present outputs.
        Value? In(int i) => i < n.Inputs.Count ? PrefixCache.PastBehind(n.Inputs[i]) ?? n.Inputs[i] : null;
        Value? Out(int i) => i < n.Outputs.Count && n.Outputs[i] is { } o ? PrefixCache.PresentAfter(o) ?? o : null;
        why = common;
        if (why is not null) return null;
        if (In(past) is { } p && !(p.IsGraphInput && !p.IsInitializer)) { why = $"past '{p.Name}' is not a graph input"; return null; }
        if (Out(present) is { } o && (o.Uses.Count > 0 || !o.IsGraphOutput))
            { why = $"present '{o.Name}' is read inside the graph"; return null; }
        var s = new CacheStream { OneHeadLast = oneHeadLast };
        s.Sources.Add(new Use(n, input));
        if (In(past) is { } pp) s.CacheInputs.Add(pp.Name);
        if (Out(present) is { } po) { s.CacheOutputs.Add(po.Name); s.Values.Add(po); }
        return s;
    }

    /// <summary>
    /// ONNX Attention (opset 23, what fuse_attention emits): Q, K, V at inputs 0–2, either [batch, heads, sequence, head_size]
    /// or [batch, sequence, heads · head_size] with q_num_heads / kv_num_heads; past key / value at inputs 4 / 5 and present at
    /// outputs 1 / 2, [batch, kv heads, total, head_size]. RoPE, if any, is applied before it. ai.quantc.CausalAttention
    /// (lower_attention's) has the same inputs and outputs at the same places (its input 3 is the int64 padding mask).
    /// </summary>
    private static AttentionSite? OnnxAttention(Node n, HashSet<string> taken, string form)
    {
        Value? In(int i) => i < n.Inputs.Count ? n.Inputs[i] : null;
        long qh = n.GetInt("q_num_heads", 0), kvh = n.GetInt("kv_num_heads", 0);
        bool threeD = qh > 0 && kvh > 0;
        // past_key's shape, read behind a constant prefix (PrefixCache) when there is one.
        // lower_attention's fused CausalAttention: Q, K and V one packed tensor, and/or RoPE and the R3 Hadamard inside.
        bool causal = form == "CausalAttention", packed = causal && n.GetInt("packed_qkv", 0) != 0;
        bool ropeInside = causal && (In(6) is not null || n.GetInt("qk_hadamard", 0) != 0);
        long kvWidth = packed ? qh + 2 * kvh : kvh;
        long? d = (PrefixCache.PastBehind(In(4)) ?? In(4))?.Shape is { Length: 4 } ps && ps[3] is > 0 and var pd ? pd
            : !threeD && In(1)?.Shape is { Length: 4 } ks && ks[3] is > 0 and var kd ? kd
            : threeD && In(1)?.Shape is { Length: 3 } k3 && k3[2] is > 0 and var width && width % kvWidth == 0 ? width / kvWidth : null;
        string? common = In(1) is null || In(2) is null ? "no separate key and value inputs"
            : packed ? "ai.quantc.CausalAttention reads Q, K and V from one packed tensor (lower_attention's packed_qkv)"
            : d is null ? "the head size is unknown (no static past_key or key shape)"
            : In(1)!.Shape is { } kr && kr.Length != (threeD ? 3 : 4)
                ? $"the key input has rank {kr.Length}, not {(threeD ? "3 (q_num_heads set)" : "4")}" : null;
        var keys = FusedStream(n, 1, 4, 1, oneHeadLast: !threeD, common, out var kw);
        var values = FusedStream(n, 2, 5, 2, oneHeadLast: !threeD, common, out var vw);
        return new AttentionSite
        {
            Name = NameOf(n, taken), Form = form, Node = n, HeadDim = d,
            Query = new Use(n, 0), QueryOneHeadLast = !threeD,
            Keys = keys, KeysWhy = kw, Values = values, ValuesWhy = vw,
            RopeInside = ropeInside
                ? "ai.quantc.CausalAttention applies RoPE and/or the R3 Hadamard inside (lower_attention's fused form), so its query " +
                    "and key inputs are before them" : null,
        };
    }

    /// <summary>MatMul(Q, Kᵀ) whose product reaches a Softmax over the last axis (through scale and mask) that feeds MatMul(P,
    /// V).</summary>
    private static AttentionSite? Eager(Node mm, HashSet<string> taken, Dictionary<Node, DecomposedAttention> bySoftmax)
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
        if (!bySoftmax.TryGetValue(softmax, out var parts)) return null;
        var pv = parts.Context;
        if (pv.Inputs[1] is not { } vIn || Constants.IsConstant(vIn)) return null;

        var keys = Follow(mm.Inputs[1]!, new Use(mm, 1), transposed: true, out var kw, out long? kd);
        var values = Follow(vIn, new Use(pv, 1), transposed: false, out var vw, out long? vd);
        return new AttentionSite
        {
            Name = NameOf(mm, taken), Form = "eager", Node = mm, HeadDim = kd ?? vd,
            Query = new Use(mm, 0), QueryOneHeadLast = true,
            Keys = keys, KeysWhy = kw, Values = values, ValuesWhy = vw, Decomposed = parts,
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
                var axes = HeadAxis.UnsqueezeAxes(n);
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
        if (v.Producer is { } p && p.Is("Reshape") && Constants.Ints(Constants.Of(p.Inputs[1])) is { Length: > 0 } shape && shape[^1] > 0)
            return shape[^1];
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
            if (!t && PrefixCache.PastBehind(v) is { } behind) v = behind;   // constant prefix keys/values ahead of the past
            if (v.IsGraphInput && !v.IsInitializer)
            {
                if (t) { st.Why = $"past '{v.Name}' enters transposed"; return null; }
                if (!s.CacheInputs.Contains(v.Name)) s.CacheInputs.Add(v.Name);
                if (v.Shape is not { Length: > 0 } sh || sh[^1] is not > 0)
                    { st.Why = $"past '{v.Name}' has no static last dimension"; return null; }
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
                        else if (!t && HeadAxis.TransposeKeepsLast(n)) next.Add((n.Inputs[0]!, false));
                        break;
                    }
                    case "Expand" when !t:
                        bad = HeadAxis.Expand(n, last: null);
                        if (bad is null) next.Add((n.Inputs[0]!, false));
                        break;
                    case "Unsqueeze" when !t:
                        bad = HeadAxis.Unsqueeze(n, inputRank: null, outputRank: RankOf(v), out _);
                        if (bad is null) next.Add((n.Inputs[0]!, false));
                        break;
                    case "Concat" when !t:
                        bad = HeadAxis.Concat(n, RankOf(v));
                        if (bad is null) foreach (var ci in n.Inputs) if (ci is not null) next.Add((ci, false));
                        break;
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
                    d = reader.Node.Inputs.Select(i => PrefixCache.PastBehind(i) ?? i).Where(i => i is not null && i.IsGraphInput &&
                        !i.IsInitializer).Select(i =>
                        i!.Shape is { Length: > 0 } ps ? ps[^1] : null).FirstOrDefault(x => x is > 0);
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
            {
                if (PrefixCache.IsPresentSlice(u.Node) && u.InputIndex == 0) { s.CacheOutputs.Add(u.Node.Output.Name); continue; }
                if (!onPath.Contains(u.Node)) { st.Why = $"'{v.Name}' is also read by {u.Node.OpType} '{u.Node.Name}'"; return null; }
            }
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
            if (p.Is("Unsqueeze") || p.Is("Expand") || (p.Is("Transpose") && HeadAxis.TransposeKeepsLast(p))) { x = p.Inputs[0]; continue; }
            if (p.Is("Concat"))
                return p.Inputs.Select(i => PrefixCache.PastBehind(i) ?? i).Any(i => i is not null && i.IsGraphInput && !i.IsInitializer &&
                    i.Shape is { Length: > 0 } ps && ps[^1] == shape[^1]);
            return false;
        }
        return false;
    }
}

/// <summary>
/// The decomposed (eager) attention around one Softmax P = Softmax(scores) that a MatMul(P, V) reads, with the
/// parts of the form fuse_attention rewrites into one ONNX Attention: scores = [Add(·, mask)] ∘ [Mul/Div by a
/// floating-point scalar constant] ∘ MatMul(Q, Transpose(K, [0, 1, 3, 2])), K and V before HF's repeat-kv and
/// their KV-cache Concat(past, new) on the sequence axis. <see cref="FuseWhy"/> says why a Softmax is not
/// of that form. The form is stricter than what an eager <see cref="AttentionSite"/> takes (any order of up to
/// five single-use scale/Add/Cast ops between the score MatMul and the Softmax, keys and values followed
/// back through any repeat-kv, transpose and Concat by <see cref="CacheStream"/>), and looser in places (Q
/// or V may be constant, a Softmax axis of 3 need not be the last of a known rank): each pass keeps its own
/// acceptance, the parts are found here once. Set as far as the match got; all meaningful when <see cref="Fusable"/>.
/// </summary>
public sealed class DecomposedAttention
{
    public required Node Softmax { get; init; }

    /// <summary>MatMul(P, V): the first MatMul reading the probabilities as its first input.</summary>
    public required Node Context { get; init; }

    /// <summary>True when <see cref="Context"/> is the probabilities' only reader and they are no graph output.</summary>
    public bool ContextAlone { get; private set; }

    /// <summary>MatMul(Q, Kᵀ), the scores.</summary>
    public Node? Scores { get; private set; }

    /// <summary>The Mul or Div applying the scale to the scores, null when none (scale 1).</summary>
    public Node? ScaleOp { get; private set; }

    /// <summary>The factor the scores are multiplied by: the Mul's constant, or 1/the Div's.</summary>
    public float Scale { get; private set; } = 1f;

    /// <summary>The Add of the additive mask, and the mask it adds; null when none.</summary>
    public Node? MaskAdd { get; private set; }
    public Value? Mask { get; private set; }

    public Value? Q { get; private set; }

    /// <summary>Transpose(K, [0, 1, 3, 2]), the score MatMul's second input.</summary>
    public Node? KeyTranspose { get; private set; }

    /// <summary>K and V before repeat-kv (the present cache when concatenated with a past).</summary>
    public Value? K { get; private set; }
    public Value? V { get; private set; }

    /// <summary>True when K and V come through repeat-kv (grouped-query heads).</summary>
    public bool RepeatedKv { get; private set; }

    /// <summary>Concat(past, new) on axis 2 making <see cref="K"/> (<see cref="V"/>), null when not concatenated with a cache.</summary>
    public Node? KeyConcat { get; private set; }
    public Node? ValueConcat { get; private set; }

    public Value? PastKey => KeyConcat?.Inputs[0];
    public Value? PastValue => ValueConcat?.Inputs[0];
    public Value? NewKey => KeyConcat is { } c ? c.Inputs[1] : K;
    public Value? NewValue => ValueConcat is { } c ? c.Inputs[1] : V;

    /// <summary>Query heads and KV heads (Q's and K's axis 1), where static.</summary>
    public long? QueryHeads => Q?.Shape is { Length: 4 } s ? s[1] : null;
    public long? KvHeads => K?.Shape is { Length: 4 } s ? s[1] : null;

    /// <summary>Why this is not of the form fuse_attention rewrites; null when it is, or when it does not look like attention (<see
    /// cref="ContextAlone"/> false).</summary>
    public string? FuseWhy { get; private set; }

    public bool Fusable => ContextAlone && FuseWhy is null;

    /// <summary>The attention around <paramref name="softmax"/>, or null when no MatMul reads its output as the first input.</summary>
    public static DecomposedAttention? At(Node softmax)
    {
        var context = softmax.Output.Uses.FirstOrDefault(u => u.Node.Is("MatMul") && u.InputIndex == 0).Node;
        if (context is null) return null;
        var d = new DecomposedAttention { Softmax = softmax, Context = context };
        d.FuseWhy = d.Match();
        return d;
    }

    private string? Match()
    {
        var probs = Softmax.Output;
        ContextAlone = probs.Uses.Count == 1 && !probs.IsGraphOutput;
        if (!ContextAlone) return null;
        long axis = Softmax.GetInt("axis", -1);
        if (axis != -1 && axis != 3) return $"softmax axis {axis}";

        // Scores: [Add(·, mask)] ∘ [Mul/Div by a scalar constant] ∘ MatMul(Q, Transpose(K)).
        Value scores = Softmax.Inputs[0]!;
        if (scores.Producer is { } add && add.Is("Add") && scores.IsSingleUse)
        {
            var (a, b) = (add.Inputs[0]!, add.Inputs[1]!);
            bool aIsScores = IsScoresChain(a), bIsScores = IsScoresChain(b);
            if (aIsScores == bIsScores) return "cannot tell the scores from the mask in the Add";
            MaskAdd = add;
            (scores, Mask) = aIsScores ? (a, b) : (b, a);
        }
        if (scores.Producer is { } mul && (mul.Is("Mul") || mul.Is("Div")) && scores.IsSingleUse)
        {
            int ci = Scalar(mul.Inputs[1]) is not null ? 1 : mul.Is("Mul") && Scalar(mul.Inputs[0]) is not null ? 0 : -1;
            if (ci < 0) return "the scores are scaled by a non-constant";
            float c = Scalar(mul.Inputs[ci])!.Value;
            ScaleOp = mul;
            Scale = mul.Is("Mul") ? c : 1f / c;
            scores = mul.Inputs[1 - ci]!;
        }
        if (scores.Producer is not { } qk || !qk.Is("MatMul") || !scores.IsSingleUse) return "the scores are not a MatMul";
        Scores = qk;
        var q = Q = qk.Inputs[0]!;
        if (qk.Inputs[1]!.Producer is not { } kt || !kt.Is("Transpose") || !qk.Inputs[1]!.IsSingleUse
            || kt.GetInts("perm") is not { } perm || !perm.SequenceEqual([0L, 1, 3, 2]))
            return "K does not enter as Transpose(perm [0, 1, 3, 2])";
        KeyTranspose = kt;
        var k = K = UnrepeatKv(kt.Inputs[0]!, out bool kRepeated);
        V = UnrepeatKv(Context.Inputs[1]!, out bool vRepeated);
        RepeatedKv = kRepeated;
        if (kRepeated != vRepeated) return "K and V are repeated differently";

        // Shapes, where known: Q [B, H, S, D], K/V [B, Hkv, T, D] with Hkv dividing H. (Transpose's
        // 4-axis perm already makes K rank 4; ONNX Runtime checks the rest when the session is made.)
        if (q.Shape is { } qs && qs.Length != 4) return $"Q has rank {qs.Length}, not [batch, heads, sequence, head size]";
        if (QueryHeads is { } h && KvHeads is { } hk && (hk == 0 || h % hk != 0)) return $"{h} query heads do not group over {hk} KV heads";
        if (Mask is { Shape: { } msh } && msh.Length is not (2 or 3 or 4)) return $"mask of rank {msh.Length}";
        if (Mask is { } m && m.ElementType != 0 && q.ElementType != 0 && m.ElementType != q.ElementType)
            return "the mask's element type is not Q's";

        static Node? CacheConcat(Value x) => x.Producer is { } c && c.Is("Concat") && c.Inputs.Count == 2 &&
            c.GetInt("axis", 0) is 2 or -2 ? c : null;
        KeyConcat = CacheConcat(k);
        ValueConcat = CacheConcat(V);
        if ((KeyConcat is null) != (ValueConcat is null)) return "only one of K and V is concatenated with a cache";
        return null;
    }

    /// <summary>Read by one node and no graph output.</summary>

    private static bool IsScoresChain(Value v) =>
        v.Producer is { } p &&
            (p.Is("MatMul") || ((p.Is("Mul") || p.Is("Div")) && p.Inputs.Any(i => i?.Producer is { } mm && mm.Is("MatMul"))));

    private static float? Scalar(Value? v) =>
        Constants.Of(v) is { } t && t.ElementCount == 1 && Constants.IsFloatingPoint(t.DataType) ? t.ToFloat32()[0] : null;

    /// <summary>x before HF's repeat_kv (Reshape(Expand(Unsqueeze(x, [2]), [1, 1, rep, 1, 1]), [b, heads, −1, d])), else x.</summary>
    private static Value UnrepeatKv(Value x, out bool repeated)
    {
        repeated = false;
        if (x.Producer is not { } r || !r.Is("Reshape") || !x.IsSingleUse) return x;
        if (r.Inputs[0]!.Producer is not { } e || !e.Is("Expand") || !r.Inputs[0]!.IsSingleUse) return x;
        if (e.Inputs[0]!.Producer is not { } u || !u.Is("Unsqueeze") || !e.Inputs[0]!.IsSingleUse) return x;
        var axes = u.Inputs.Count > 1 ? Constants.Ints(Constants.Of(u.Inputs[1])) : u.GetInts("axes")?.ToArray();
        var shape = Constants.Ints(Constants.Of(e.Inputs[1]));
        if (axes is not [2] || shape is not { Length: 5 } || shape[0] != 1 || shape[1] != 1 || shape[3] != 1 || shape[4] != 1) return x;
        repeated = true;
        return u.Inputs[0]!;
    }
}
