using System.Globalization;
using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>
/// FireqRope (FireQ's RoPE-aware Q/K scaling, Baek et al. 2025), per attention and KV head h, head size d, RoPE pairs
/// (i, i + d/2) (rotate-half RoPE):
/// <list type="bullet">
/// <item>pre-RoPE: m_i = max over the calibration tokens of √(k_i² + k_{i+d/2}²) on k_proj's output, s_i = <c>target</c>/m_i on
/// both channels of the pair — a per-pair scale commutes with the rotation — folded into k_proj's output columns (and bias), 1/s_i
/// into q_proj's for every query head of the group (GQA): QKᵀ unchanged;</item>
/// <item>post-RoPE: the <c>top</c> channels of the largest post-RoPE key absmax and their RoPE partners get k' = k·(target/max) and
/// q' = q·(max/target) there — an online multiply on the keys and queries after RoPE (where the keys enter the cache and the
/// attention, as rotate_qk's Hadamard does) — and their pre-RoPE scale is reset to 1.</item>
/// </list>
/// Both statistics come from one calibration run of the model as it is (one sequence per batch: the data loader's samples). The
/// projections are found from the attention back through RoPE and the head reshapes; eager attention,
/// com.microsoft GroupQueryAttention and ONNX Attention (GQA included); a GroupQueryAttention applying RoPE inside (do_rotary = 1)
/// gets the pre-RoPE scaling only, as does an attention without RoPE on its key path (RotaryEmbedding, or the rotate-half form
/// fuse_rope recognises: there the pair scales are plain per-channel scales, still exact), an interleaved RotaryEmbedding
/// neither — each with its reason in the log. Function-preserving for the logits; the key
/// cache holds the scaled keys (FireQ's INT4 cache stores them), recorded in the metadata (<c>quantc.key_cache_scale</c>).
/// </summary>
public sealed class FireqRopePass(bool pre, bool post, double target, int top, string queries, string keys) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<FireqRopeOptions>("fireq_rope", PassKind.FunctionPreserving,
        "FireQ: pre-RoPE per-pair key scaling folded into k_proj/q_proj, post-RoPE online scaling of the top key channels",
        o => new FireqRopePass(o.Pre, o.Post, o.Target, o.Top, o.Queries, o.Keys));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>The metadata key naming the key-cache tensors held scaled.</summary>
    public const string KeyCacheScaleKey = CacheTransforms.KeyScaleKey;

    private sealed record Site(AttentionSite A, LinearLayer Q, LinearLayer K, int D, int KvHeads, int QHeads, string? PostWhy,
        List<Value> Scaled);

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        if (map.Attention.Count == 0)
        {
            ctx.Notice("fireq_rope: no attention found (eager MatMul/Softmax/MatMul, GroupQueryAttention, MultiHeadAttention or ONNX " +
                "Attention)");
            return;
        }
        if (ctx.Model.Metadata.FirstOrDefault(kv => kv.Key == CacheTransforms.KeyKey).Value is { } rotated)
            throw new BadInputException($"fireq_rope: the model's key cache is already rotated ({CacheTransforms.KeyKey} = " +
                $"'{rotated}'); a per-channel key scale does not commute with that rotation: run fireq_rope before rotate_qk or not " +
                "at all");
        var sites = new List<Site>();
        foreach (var a in map.Attention)
        {
            if (Resolve(a, map, out string? why) is { } s) sites.Add(s);
            else ctx.Log.Add($"fireq_rope: {a.Name} ({a.Form}) skipped: {why}");
        }
        if (sites.Count == 0) { ctx.Notice($"fireq_rope: none of {map.Attention.Count} attentions could be scaled (see the log)"); return; }

        // One calibration run: k_proj's outputs (pre-RoPE pairs) and the keys after RoPE where they enter the cache.
        var pairMax = new Dictionary<string, (float[] Max, int D)>(StringComparer.Ordinal);
        foreach (var s in sites) pairMax.TryAdd(s.K.Output.Name, (new float[s.KvHeads * s.D / 2], s.D));
        var postMax = new Dictionary<string, (float[] Max, int Heads, bool OneHeadLast)>(StringComparer.Ordinal);
        foreach (var s in sites.Where(s => post && top > 0 && s.PostWhy is null))
            foreach (var src in s.A.Keys!.Sources)
                postMax.TryAdd(Input(src).Name, (new float[s.KvHeads * s.D], s.KvHeads, s.A.Keys.OneHeadLast));
        ctx.Calibrate(pairMax.Keys.Concat(postMax.Keys).Distinct().ToList(), Name, (name, data, channels) =>
        {
            if (pairMax.TryGetValue(name, out var pm)) lock (pm.Max) PairMax(pm.Max, pm.D, data, channels);
            if (postMax.TryGetValue(name, out var po)) lock (po.Max) PostMax(po.Max, po.Heads, po.OneHeadLast, data, channels);
        });

        var cache = new List<string>();
        foreach (var s in sites)
        {
            int d = s.D, half = d / 2;
            var m = pairMax[s.K.Output.Name].Max;
            var preScale = new float[s.KvHeads * d];
            var postScale = new float[s.KvHeads * d];
            Array.Fill(preScale, 1f);
            Array.Fill(postScale, 1f);
            int selected = 0;
            bool doPost = post && top > 0 && s.PostWhy is null;
            float[]? pk = doPost ? Merge(s.A.Keys!.Sources.Select(src => postMax[Input(src).Name].Max)) : null;
            for (int h = 0; h < s.KvHeads; h++)
            {
                var chosen = new HashSet<int>();
                if (pk is not null)
                    foreach (int c in Enumerable.Range(0, d).OrderByDescending(c => pk[h * d + c]).ThenBy(c => c).Take(top))
                        { chosen.Add(c); chosen.Add(c < half ? c + half : c - half); }
                foreach (int c in chosen)
                    if (pk![h * d + c] > 0) postScale[h * d + c] = (float)(target / pk[h * d + c]);
                selected += chosen.Count;
                if (!pre) continue;
                for (int i = 0; i < half; i++)
                {
                    if (chosen.Contains(i) || chosen.Contains(i + half)) continue;   // reset to 1 where the post-RoPE scale acts
                    float mi = m[h * half + i];
                    if (mi <= 0) continue;
                    preScale[h * d + i] = preScale[h * d + i + half] = (float)(target / mi);
                }
            }
            if (pre) FoldPre(ctx, g, s, preScale);
            if (doPost) Online(ctx, g, s, postScale);
            var keysIo = s.A.Keys is { } ks ? ks.CacheOutputs.Concat(ks.CacheInputs).Distinct().ToList() : [];
            if (keysIo.Count > 0)
                cache.Add(CacheTransforms.KeyScaleGroup(s.KvHeads, d, preScale.Select((p, i) => p * postScale[i]).ToList(), keysIo));
            var applied = preScale.Where(v => v != 1).DefaultIfEmpty(1f).ToArray();
            string preText = pre
                ? string.Create(CultureInfo.InvariantCulture, $"pre-RoPE pair scales in [{applied.Min():G3}, {applied.Max():G3}]")
                : "no pre-RoPE scaling";
            string postText = doPost ? $"post-RoPE scaling on {selected} key channels (top {top} per head and their RoPE partners)"
                : $"no post-RoPE scaling{(s.PostWhy is null ? "" : $": {s.PostWhy}")}";
            ctx.Log.Add($"fireq_rope: {s.A.Name} ({s.A.Form}; {s.Q.Name}, {s.K.Name}; {s.QHeads} query heads over {s.KvHeads} KV " +
                "heads of " +
                $"{d}): {preText}; {postText}");
        }
        if (cache.Count > 0) ctx.Model.SetMetadata(KeyCacheScaleKey, string.Join("|", cache));
    }

    private static Value Input(Use u) => u.Node.Inputs[u.InputIndex]!;

    private static float[] Merge(IEnumerable<float[]> maxima)
    {
        float[]? r = null;
        foreach (var m in maxima)
        {
            r ??= new float[m.Length];
            for (int i = 0; i < m.Length; i++) r[i] = Math.Max(r[i], m[i]);
        }
        return r!;
    }

    /// <summary>Per (head h, i &lt; d/2) at h·d/2 + i: max √(k_i² + k_{i+d/2}²) over the rows of a [tokens, heads·d] tensor.</summary>
    private static void PairMax(float[] pm, int d, ReadOnlySpan<float> data, int channels)
    {
        if (pm.Length * 2 != channels)
            throw new InvalidOperationException($"k_proj output of {channels} channels, expected {pm.Length * 2}");
        int half = d / 2;
        for (int r = 0; r < data.Length / channels; r++)
        {
            var row = data.Slice(r * channels, channels);
            for (int p = 0; p < pm.Length; p++)
            {
                int a = p / half * d + p % half, b = a + half;
                float v = MathF.Sqrt(row[a] * row[a] + row[b] * row[b]);
                if (v > pm[p]) pm[p] = v;
            }
        }
    }

    /// <summary>
    /// Per (head, channel): max |k| of the keys after RoPE, [heads·d]. A tensor whose last axis is one head is [1, heads, t, d]
    /// (one sequence per batch, as the calibration samples are): its rows run head by head.
    /// </summary>
    private static void PostMax(float[] pk, int heads, bool oneHeadLast, ReadOnlySpan<float> data, int channels)
    {
        int rows = data.Length / channels;
        if (oneHeadLast && rows % heads != 0)
            throw new InvalidOperationException($"a key tensor of {rows} rows is not {heads} heads of a single sequence");
        int perHead = oneHeadLast ? rows / heads : 0;
        for (int r = 0; r < rows; r++)
        {
            int offset = oneHeadLast ? r / perHead * channels : 0;
            var row = data.Slice(r * channels, channels);
            for (int c = 0; c < channels; c++)
            {
                float v = MathF.Abs(row[c]);
                if (v > pk[offset + c]) pk[offset + c] = v;
            }
        }
    }

    /// <summary>k_proj's output columns (and bias) × s, q_proj's × 1/s for every query head of each KV head's group.</summary>
    private static void FoldPre(PassContext ctx, Graph g, Site s, float[] preScale)
    {
        int d = s.D, group = s.QHeads / s.KvHeads;
        var qScale = new float[s.QHeads * d];
        for (int h = 0; h < s.QHeads; h++) for (int c = 0; c < d; c++) qScale[h * d + c] = 1 / preScale[h / group * d + c];
        ScaleColumns(g, s.K, preScale);
        ScaleColumns(g, s.Q, qScale);
        ctx.Plan[s.K.Name].Transforms.Add("FireQ pre-RoPE key scaling per RoPE pair");
        ctx.Plan[s.Q.Name].Transforms.Add("FireQ pre-RoPE query scaling (the keys' inverse)");
        foreach (var v in new[] { s.K.Node.Outputs[0]!, s.K.Output, s.Q.Node.Outputs[0]!, s.Q.Output }.Concat(s.Scaled))
            if (!v.IsGraphOutput) ctx.Provenance.RecordTransformed(v.Name, "scaled");
    }

    private static void ScaleColumns(Graph g, LinearLayer l, float[] f)
    {
        var w = Weights.Read(l);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        for (int j = 0; j < k; j++) for (int c = 0; c < n; c++) w[j * n + c] *= f[c];
        Weights.Write(g, l, w);
        if (l.Bias?.Initializer is { } bt)
            g.SetInitializer(l.Bias, Tensor.FromFloats(l.Bias.Name, bt.Dims, bt.ToFloat32().Select((b, c) => b * f[c]).ToArray()));
    }

    /// <summary>k' = k·v where the keys enter, q' = q·(1/v) per query head (v per KV head, [heads·d]).</summary>
    private static void Online(PassContext ctx, Graph g, Site s, float[] v)
    {
        int d = s.D, group = s.QHeads / s.KvHeads;
        var q = new float[s.QHeads * d];
        for (int h = 0; h < s.QHeads; h++) for (int c = 0; c < d; c++) q[h * d + c] = 1 / v[h / group * d + c];
        var keys = s.A.Keys!;
        foreach (var src in keys.Sources) Multiply(ctx, g, src, v, s.KvHeads, keys.OneHeadLast, s.A.Name + "/fireq_k_scale");
        Multiply(ctx, g, s.A.Query, q, s.QHeads, s.A.QueryOneHeadLast, s.A.Name + "/fireq_q_scale");
        foreach (var x in keys.Values) if (!x.IsGraphOutput) ctx.Provenance.RecordTransformed(x.Name, "scaled");
    }

    private static void Multiply(PassContext ctx, Graph g, Use slot, float[] f, int heads, bool oneHeadLast, string name)
    {
        var e = new Emitter(g, slot.Node, name);
        long[] dims = oneHeadLast ? [heads, 1, f.Length / heads] : [f.Length];
        var c = g.AddInitializer(Tensor.FromFloats(e.Name("_factors"), dims, f));
        var y = e.Op("Mul", "", Input(slot), c);
        ctx.Provenance.RecordTransformed(y.Name, "scaled");
        slot.Node.SetInput(slot.InputIndex, y);
    }

    /// <summary>The site with its q_proj and k_proj (found back from the query and the keys), or null with the reason.</summary>
    private Site? Resolve(AttentionSite a, ModelMap map, out string? why)
    {
        why = null;
        if (a.HeadDim is not { } hd || hd % 2 != 0)
            { why = a.HeadDim is null ? "head size unknown" : $"odd head size {a.HeadDim}"; return null; }
        if (a.Keys is null) { why = a.KeysWhy; return null; }
        int d = (int)hd;
        var k = Upstream(Input(a.Keys.Sources[0]), map, keys, out var kRope, out var kPath);
        var q = Upstream(Input(a.Query), map, queries, out var qRope, out var qPath);
        if (k is null || q is null)
            { why = $"no {(k is null ? "key" : "query")} projection matching {(k is null ? keys : queries)} found behind it"; return null; }
        if (a.Keys.Sources.Skip(1).Any(src => !ReferenceEquals(Upstream(Input(src), map, keys, out _, out _), k)))
            { why = "its key sources come from different projections"; return null; }
        if (k.OutFeatures % d != 0 || q.OutFeatures % d != 0)
            { why = $"projection widths {q.OutFeatures}, {k.OutFeatures} are not whole heads of {d}"; return null; }
        int kvh = (int)(k.OutFeatures / d), qh = (int)(q.OutFeatures / d);
        if (qh % kvh != 0) { why = $"{qh} query heads do not group over {kvh} KV heads"; return null; }
        if (k.Weight.Uses.Count != 1 || q.Weight.Uses.Count != 1) { why = "a projection's weight is shared"; return null; }
        if (kRope.Concat(qRope).FirstOrDefault(n => n.GetInt("interleaved", 0) != 0) is { } il)
            { why = $"{il.OpType} '{il.Name}' is interleaved (RoPE pairs (2i, 2i + 1), not (i, i + d/2))"; return null; }
        // Without RoPE the pre-RoPE pair scales are plain per-channel scales (still exact); the post-RoPE step is for RoPE's outliers.
        string? postWhy = a.RopeInside
            ?? (kRope.Count == 0 ? "no RoPE (RotaryEmbedding or x·cos + rotate_half(x)·sin) found between the key projection and the " +
                "attention" : null);
        return new Site(a, q, k, d, kvh, qh, postWhy, [.. kPath, .. qPath]);
    }

    /// <summary>The linear layer matching <paramref name="pattern"/> whose output reaches <paramref name="v"/> through at most 24
    /// non-constant producers (RoPE, reshapes, transposes), and the RoPE on the way: RotaryEmbedding nodes, and the Adds of
    /// fuse_rope's decomposed rotate-half form; <paramref name="path"/>: the values on the way that derive from the layer's output
    /// (they carry its scaled channels; the cos/sin tables and positions do not).</summary>
    private static LinearLayer? Upstream(Value v, ModelMap map, string pattern, out List<Node> rope, out List<Value> path)
    {
        rope = [];
        path = [];
        var byOutput = new Dictionary<Value, LinearLayer>(ReferenceEqualityComparer.Instance);
        foreach (var l in map.Linears.Where(l => Regex.IsMatch(l.Name, pattern))) byOutput[l.Output] = l;
        var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var ropeAdds = map.Ropes.Select(r => r.Add).ToHashSet(ReferenceEqualityComparer.Instance);
        var queue = new Queue<(Value V, int Depth)>([(v, 0)]);
        LinearLayer? found = null;
        while (queue.Count > 0)
        {
            var (x, depth) = queue.Dequeue();
            if (!seen.Add(x)) continue;
            if (byOutput.TryGetValue(x, out var l))
            {
                if (found is not null && !ReferenceEquals(found, l)) return null;   // two candidates: ambiguous
                found = l;
                continue;
            }
            if (depth >= 24 || x.Producer is not { } p || x.IsGraphInput) continue;
            if (p.OpType == "RotaryEmbedding" || ropeAdds.Contains(p)) rope.Add(p);
            foreach (var i in p.Inputs) if (i is not null && !Quantc.Ir.Patterns.Constants.IsConstant(i)) queue.Enqueue((i, depth + 1));
        }
        if (found is null) return null;
        var forward = new Stack<Value>([found.Output]);
        var onPath = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        while (forward.Count > 0)
            foreach (var (n, _) in forward.Pop().Uses)
                foreach (var o in n.Outputs)
                    if (o is not null && seen.Contains(o) && onPath.Add(o)) { path.Add(o); forward.Push(o); }
        return found;
    }
}

/// <summary>The options of <see cref="FireqRopePass"/>.</summary>
public sealed record FireqRopeOptions : PassOptions
{
    [Option("pre-RoPE per-pair key scaling folded into k_proj and q_proj")]
    public bool Pre { get; init; } = true;

    [Option("post-RoPE online scaling of each head's top key channels")]
    public bool Post { get; init; } = true;

    [Option("the magnitude the scaled keys are brought to (FireQ: 8)", Min = 0, MinExclusive = true)]
    public double Target { get; init; } = 8;

    [Option("key channels per head scaled after RoPE (with their RoPE partners)", Min = 0, Max = 4096)]
    public int Top { get; init; } = 8;

    [Option("the query projections", Regex = true)]
    public string Queries { get; init; } = "q_proj$";

    [Option("the key projections", Regex = true)]
    public string Keys { get; init; } = "k_proj$";

    public override string? Check() => !Pre && (!Post || Top == 0) ? "pre and post are both off (or top is 0): nothing to scale" : null;
}
