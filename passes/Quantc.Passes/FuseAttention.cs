using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Patterns;

namespace Quantc.Passes;

/// <summary>
/// FuseAttention: rewrites the decomposed scaled-dot-product attention that PyTorch exporters emit —
/// <c>Softmax(MatMul(Q, Transpose(K)) · scale + mask) · V</c>, with the KV cache as <c>Concat(past, new)</c>
/// and grouped-query heads as repeat-kv (Unsqueeze → Expand → Reshape) — into one standard ONNX
/// <c>Attention</c> (opset 23), which ONNX Runtime runs as a single fused CPU kernel: no S×T score tensor
/// between ops, no repeated KV heads, no Concat copies of the cache. The additive mask stays the op's
/// <c>attn_mask</c> (so padding works as before), the past/present cache tensors keep their names and
/// layout, and grouped-query heads go in as they are (Attention takes fewer KV heads than query heads).
/// Function-preserving (same arithmetic, another kernel); attentions of any other form are left alone
/// with the reason in the log. Runs last in a recipe, after the passes that look into attention
/// (rotate_head, online Hadamards).
/// </summary>
public sealed class FuseAttentionPass : IPass
{
    public string Name => "fuse_attention";
    public PassKind Kind => PassKind.Lowering;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        int fused = 0, flat = 0;
        var made = new List<Node>();
        foreach (var softmax in g.Nodes.Where(n => n.Is("Softmax")).ToList())
        {
            var m = Match(softmax, out string? why);
            if (m is null)
            {
                if (why is not null) ctx.Log.Add($"fuse_attention: {softmax.Name} left as it is: {why}");
                continue;
            }
            made.Add(Rewrite(g, m));
            fused++;
        }
        if (fused == 0) { ctx.Log.Add("fuse_attention: no decomposed attention found"); return; }
        g.RemoveDeadCode();
        // With the old score ops gone, Q/K/V have the Attention as their only reader: try the 3-D form.
        foreach (var att in made) if (ThreeD(g, att)) flat++;
        if (flat > 0) g.RemoveDeadCode();
        g.SortTopologically();
        if ((ctx.Model.OpsetVersion("") ?? 0) < 23) ctx.Model.SetOpset("", 23);
        ctx.Log.Add($"fuse_attention: {fused} attention block(s) → ONNX Attention (opset 23){(flat > 0 ? $", {flat} of them on the projections' [batch, sequence, heads·head size] tensors directly" : "")}");
    }

    private sealed record Found(Node Softmax, Node Context, Value Q, Value K, Value V, Value? Mask, float Scale,
        Node? KConcat, Node? VConcat);

    /// <summary>The attention around <paramref name="softmax"/>, or null (with a reason when it looked like one).</summary>
    private static Found? Match(Node softmax, out string? why)
    {
        why = null;
        var probs = softmax.Output;
        if (probs.Uses.Count != 1 || probs.IsGraphOutput || probs.Uses[0] is not { Node: var ctxNode, InputIndex: 0 } || !ctxNode.Is("MatMul")) return null;
        long axis = softmax.GetInt("axis", -1);
        if (axis != -1 && axis != 3) { why = $"softmax axis {axis}"; return null; }

        // Scores: [Add(·, mask)] ∘ [Mul/Div by a scalar constant] ∘ MatMul(Q, Transpose(K)).
        Value scores = softmax.Inputs[0]!;
        Value? mask = null;
        if (scores.Producer is { } add && add.Is("Add") && SingleUse(scores))
        {
            var (a, b) = (add.Inputs[0]!, add.Inputs[1]!);
            bool aIsScores = IsScoresChain(a), bIsScores = IsScoresChain(b);
            if (aIsScores == bIsScores) { why = "cannot tell the scores from the mask in the Add"; return null; }
            (scores, mask) = aIsScores ? (a, b) : (b, a);
        }
        float scale = 1f;
        if (scores.Producer is { } mul && (mul.Is("Mul") || mul.Is("Div")) && SingleUse(scores))
        {
            int ci = Scalar(mul.Inputs[1]) is not null ? 1 : mul.Is("Mul") && Scalar(mul.Inputs[0]) is not null ? 0 : -1;
            if (ci < 0) { why = "the scores are scaled by a non-constant"; return null; }
            float c = Scalar(mul.Inputs[ci])!.Value;
            scale = mul.Is("Mul") ? c : 1f / c;
            scores = mul.Inputs[1 - ci]!;
        }
        if (scores.Producer is not { } qk || !qk.Is("MatMul") || !SingleUse(scores)) { why = "the scores are not a MatMul"; return null; }
        var q = qk.Inputs[0]!;
        if (qk.Inputs[1]!.Producer is not { } kt || !kt.Is("Transpose") || !SingleUse(qk.Inputs[1]!)
            || kt.GetInts("perm") is not { } perm || !perm.SequenceEqual([0L, 1, 3, 2]))
        { why = "K does not enter as Transpose(perm [0, 1, 3, 2])"; return null; }
        var k = UnrepeatKv(kt.Inputs[0]!, out bool kRepeated);
        var v = UnrepeatKv(ctxNode.Inputs[1]!, out bool vRepeated);
        if (kRepeated != vRepeated) { why = "K and V are repeated differently"; return null; }

        // Shapes, where known: Q [B, H, S, D], K/V [B, Hkv, T, D] with Hkv dividing H. (Transpose's
        // 4-axis perm already makes K rank 4; ONNX Runtime checks the rest when the session is made.)
        if (q.Shape is { } qs && qs.Length != 4) { why = $"Q has rank {qs.Length}, not [batch, heads, sequence, head size]"; return null; }
        if (q.Shape is { } qs4 && k.Shape is { Length: 4 } ks && qs4[1] is { } h && ks[1] is { } hk && (hk == 0 || h % hk != 0))
        { why = $"{h} query heads do not group over {hk} KV heads"; return null; }
        if (mask is not null && mask.Shape is { } msh && msh.Length is not (2 or 3 or 4)) { why = $"mask of rank {msh.Length}"; return null; }
        if (mask is not null && mask.ElementType != 0 && q.ElementType != 0 && mask.ElementType != q.ElementType) { why = "the mask's element type is not Q's"; return null; }

        Node? CacheConcat(Value x) => x.Producer is { } c && c.Is("Concat") && c.Inputs.Count == 2 && c.GetInt("axis", 0) is 2 or -2 ? c : null;
        var kc = CacheConcat(k);
        var vc = CacheConcat(v);
        if ((kc is null) != (vc is null)) { why = "only one of K and V is concatenated with a cache"; return null; }
        return new Found(softmax, ctxNode, q, k, v, mask, scale, kc, vc);
    }

    private static bool SingleUse(Value v) => v.Uses.Count == 1 && !v.IsGraphOutput;

    private static bool IsScoresChain(Value v) =>
        v.Producer is { } p && (p.Is("MatMul") || ((p.Is("Mul") || p.Is("Div")) && p.Inputs.Any(i => i?.Producer is { } mm && mm.Is("MatMul"))));

    private static float? Scalar(Value? v) =>
        Constants.Of(v) is { } t && t.ElementCount == 1 && Constants.IsFloatingPoint(t.DataType) ? t.ToFloat32()[0] : null;

    /// <summary>x before HF's repeat_kv (Reshape(Expand(Unsqueeze(x, [2]), [1, 1, rep, 1, 1]), [b, heads, −1, d])), else x.</summary>
    private static Value UnrepeatKv(Value x, out bool repeated)
    {
        repeated = false;
        if (x.Producer is not { } r || !r.Is("Reshape") || !SingleUse(x)) return x;
        if (r.Inputs[0]!.Producer is not { } e || !e.Is("Expand") || !SingleUse(r.Inputs[0]!)) return x;
        if (e.Inputs[0]!.Producer is not { } u || !u.Is("Unsqueeze") || !SingleUse(e.Inputs[0]!)) return x;
        var axes = u.Inputs.Count > 1 ? Constants.Ints(Constants.Of(u.Inputs[1])) : u.GetInts("axes")?.ToArray();
        var shape = Constants.Ints(Constants.Of(e.Inputs[1]));
        if (axes is not [2] || shape is not { Length: 5 } || shape[0] != 1 || shape[1] != 1 || shape[3] != 1 || shape[4] != 1) return x;
        repeated = true;
        return u.Inputs[0]!;
    }

    private static Node Rewrite(Graph g, Found m)
    {
        Value? pastK = null, pastV = null, newK = m.K, newV = m.V;
        if (m.KConcat is { } kc && m.VConcat is { } vc)
        {
            (pastK, newK) = (kc.Inputs[0]!, kc.Inputs[1]!);
            (pastV, newV) = (vc.Inputs[0]!, vc.Inputs[1]!);
        }
        string name = g.UniqueName(m.Softmax.Name.EndsWith("/Softmax", StringComparison.Ordinal) ? m.Softmax.Name[..^"/Softmax".Length] + "/Attention" : m.Softmax.Name + "_Attention");
        // The output and the present cache take the replaced tensors' places and names (present.*.key / value).
        var att = g.AddNode("Attention", [m.Q, newK, newV, m.Mask, pastK, pastV], pastK is null ? 1 : 3, name: name, before: m.Context);
        att.SetAttribute("scale", m.Scale);
        g.ReplaceValue(m.Context.Output, att.Output);
        if (pastK is not null)
        {
            g.ReplaceValue(m.K, att.Outputs[1]!);
            g.ReplaceValue(m.V, att.Outputs[2]!);
        }
        return att;
    }

    /// <summary>
    /// Feeds <paramref name="att"/> the projections' 3-D outputs when Q, K and V all come as
    /// Transpose(Reshape(x, [0, 0, heads, d]), [0, 2, 1, 3]) — Q and K optionally through a RotaryEmbedding, which then
    /// rotates the 3-D tensor itself (num_heads) — and its output goes back through Transpose([0, 2, 1, 3]) and
    /// Reshape([0, 0, heads·d]): Attention takes and gives [batch, sequence, heads·d] with q_num_heads/kv_num_heads,
    /// and the eight head-splitting ops go. The cache stays [batch, kv heads, total, d]. False when any part differs.
    /// </summary>
    private static bool ThreeD(Graph g, Node att)
    {
        (Value X, long Heads, Node? Rope)? Split(Value v)
        {
            Node? rope = null;
            if (v.Producer is { } r && r.Is("RotaryEmbedding") && SingleUse(v) && r.Inputs[0] is { } inner && r.GetInt("num_heads", 0) == 0) { rope = r; v = inner; }
            if (v.Producer is not { } t || !t.Is("Transpose") || !SingleUse(v) || t.GetInts("perm") is not { } perm || !perm.SequenceEqual([0L, 2, 1, 3])) return null;
            var reshaped = t.Inputs[0]!;
            if (reshaped.Producer is not { } rs || !rs.Is("Reshape") || !SingleUse(reshaped)) return null;
            return Constants.Ints(Constants.Of(rs.Inputs[1])) is [0, 0, > 0 and var heads, > 0] ? (rs.Inputs[0]!, heads, rope) : null;
        }
        if (Split(att.Inputs[0]!) is not { } q || Split(att.Inputs[1]!) is not { } k || Split(att.Inputs[2]!) is not { Rope: null } v) return false;
        // The output: Y [b, h, s, d] → Transpose [0, 2, 1, 3] → Reshape [0, 0, h·d] is the only reader.
        var y = att.Outputs[0]!;
        if (!SingleUse(y) || y.Uses[0].Node is not { } tOut || !tOut.Is("Transpose") || tOut.GetInts("perm") is not { } p || !p.SequenceEqual([0L, 2, 1, 3])) return false;
        var yt = tOut.Output;
        if (!SingleUse(yt) || yt.Uses[0].Node is not { } rOut || !rOut.Is("Reshape") || Constants.Ints(Constants.Of(rOut.Inputs[1])) is not [0, 0, > 0]) return false;
        if (k.Heads != v.Heads || q.Heads % k.Heads != 0) return false;

        Value Input((Value X, long Heads, Node? Rope) part)
        {
            if (part.Rope is not { } r) return part.X;
            var n = g.AddNode("RotaryEmbedding", [part.X, .. r.Inputs.Skip(1)], 1, name: g.UniqueName(r.Name + "_3d"), before: att);
            foreach (var a in r.Attributes) n.SetAttribute(a.Proto.Clone());
            n.SetAttribute("num_heads", part.Heads);
            return n.Output;
        }
        att.SetInput(0, Input(q));
        att.SetInput(1, Input(k));
        att.SetInput(2, Input(v));
        att.SetAttribute("q_num_heads", q.Heads);
        att.SetAttribute("kv_num_heads", k.Heads);
        // The Attention's output is now the merged [b, s, h·d]: it takes the Reshape's place and name.
        y.Type = null;   // now [b, s, h·d]: the merged tensor's type
        g.ReplaceValue(rOut.Output, y);
        return true;
    }
}
