using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
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
/// (rotate_head, online Hadamards). The parts come from the eager matcher of <see cref="AttentionSite"/>
/// (<see cref="DecomposedAttention"/>, shared with rotate_qk and quantize_kv); the form taken here is its own
/// (<see cref="DecomposedAttention.FuseWhy"/>).
/// </summary>
public sealed class FuseAttentionPass : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<NoOptions>("fuse_attention", PassKind.Lowering,
        "decomposed attention (MatMul, scale, mask Add, Softmax, MatMul; KV-cache Concat; repeat-kv) → one ONNX Attention (opset 23) " +
            "that ONNX Runtime runs as a fused kernel, on the 3-D projections when the head split allows; run after fuse_rope " +
            "(fuse_projections last)",
        _ => new FuseAttentionPass());

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        if (Quantc.Ir.Import.OpsetConverter.Blocker(ctx.Model, 23) is { } blocked)
        {
            ctx.Notice($"fuse_attention: skipped, the model cannot take the opset it needs ({blocked})");
            return;
        }
        var g = ctx.Model.Graph;
        int fused = 0, flat = 0;
        var made = new List<Node>();
        // The eager attentions' parts, found by AttentionSite's matcher; every Softmax read by MatMul(P, V), site or not.
        var decomposed = ctx.Map.DecomposedAttention;
        foreach (var m in decomposed)
        {
            if (!m.ContextAlone) continue;
            if (m.FuseWhy is { } why) { ctx.Log.Add($"fuse_attention: {m.Softmax.Name} left as it is: {why}"); continue; }
            made.Add(Rewrite(g, m));
            fused++;
        }
        if (fused == 0) { ctx.Log.Add("fuse_attention: no decomposed attention found"); return; }
        g.RemoveDeadCode();
        // With the old score ops gone, Q/K/V have the Attention as their only reader: try the 3-D form.
        foreach (var att in made) if (ThreeD(g, att)) flat++;
        if (flat > 0) g.RemoveDeadCode();
        g.SortTopologically();
        if (Quantc.Ir.Import.OpsetConverter.Require(ctx.Model, 23) is { } raised) ctx.Log.Add($"fuse_attention: {raised.Describe()}");
        ctx.Log.Add($"fuse_attention: {fused} attention block(s) → ONNX Attention (opset " +
            $"23){(flat > 0 ? $", {flat} of them on the projections' [batch, sequence, heads·head size] tensors directly" : "")}");
    }


    private static Node Rewrite(Graph g, DecomposedAttention m)
    {
        Value? pastK = m.PastKey, pastV = m.PastValue;
        string name = m.Softmax.Name.EndsWith("/Softmax", StringComparison.Ordinal) ? m.Softmax.Name[..^"/Softmax".Length]
            + "/Attention" : m.Softmax.Name + "_Attention";
        // The output and the present cache take the replaced tensors' places and names (present.*.key / value).
        var att = new Emitter(g, m.Context, name).NodeOf("Attention", "", [m.Q, m.NewKey, m.NewValue, m.Mask, pastK, pastV],
            outputCount: pastK is null ? 1 : 3);
        att.SetAttribute("scale", m.Scale);
        g.ReplaceValue(m.Context.Output, att.Output);
        if (pastK is not null)
        {
            g.ReplaceValue(m.K!, att.Outputs[1]!);
            g.ReplaceValue(m.V!, att.Outputs[2]!);
        }
        return att;
    }

    /// <summary>
    /// Feeds <paramref name="att"/> the projections' 3-D outputs when Q, K and V all come as
    /// Transpose(Reshape(x, [0, 0, heads, d]), [0, 2, 1, 3]) — Q and K optionally through a RotaryEmbedding, which then
    /// rotates the 3-D tensor itself (num_heads) — and its output goes back through Transpose([0, 2, 1, 3]) and
    /// Reshape([0, 0, heads·d]): Attention takes and gives [batch, sequence, heads·d] with q_num_heads/kv_num_heads,
    /// and the eight head-splitting ops go. The cache stays [batch, kv heads, total, d]. False when any part differs.
    /// Q and K may also come through an ai.quantc.Hadamard after their RoPE (rotate_qk, QuaRot's R3): it transforms each
    /// head's d values, so on the 3-D tensor it runs between Reshape([0, 0, heads, d]) and Reshape([0, 0, heads·d]) — the
    /// same rows of d in the same memory order, so the same results, and no Transpose.
    /// </summary>
    private static bool ThreeD(Graph g, Node att)
    {
        (Value X, long Heads, long D, Node? Rope, Node? Hadamard)? Split(Value v)
        {
            Node? rope = null, hadamard = null;
            if (v.Producer is { } h && h.Is("Hadamard", CustomOps.Domain) && v.IsSingleUse && h.Inputs[0] is { } rotated)
                { hadamard = h; v = rotated; }
            if (v.Producer is { } r && r.Is("RotaryEmbedding") && v.IsSingleUse && r.Inputs[0] is { } inner &&
                r.GetInt("num_heads", 0) == 0) { rope = r; v = inner; }
            if (v.Producer is not { } t || !t.Is("Transpose") || !v.IsSingleUse || t.GetInts("perm") is not { } perm ||
                !perm.SequenceEqual([0L, 2, 1, 3])) return null;
            var reshaped = t.Inputs[0]!;
            if (reshaped.Producer is not { } rs || !rs.Is("Reshape") || !reshaped.IsSingleUse) return null;
            return Constants.Ints(Constants.Of(rs.Inputs[1])) is [0, 0, > 0 and var heads, > 0 and var d]
                ? (rs.Inputs[0]!, heads, d, rope, hadamard) : null;
        }
        if (Split(att.Inputs[0]!) is not { } q || Split(att.Inputs[1]!) is not { } k ||
            Split(att.Inputs[2]!) is not { Rope: null, Hadamard: null } v)
            return false;
        // The output: Y [b, h, s, d] → Transpose [0, 2, 1, 3] → Reshape [0, 0, h·d] is the only reader.
        var y = att.Outputs[0]!;
        if (!y.IsSingleUse || y.Uses[0].Node is not { } tOut || !tOut.Is("Transpose") || tOut.GetInts("perm") is not { } p ||
            !p.SequenceEqual([0L, 2, 1, 3])) return false;
        var yt = tOut.Output;
        if (!yt.IsSingleUse || yt.Uses[0].Node is not { } rOut || !rOut.Is("Reshape") ||
            Constants.Ints(Constants.Of(rOut.Inputs[1])) is not [0, 0, > 0]) return false;
        if (k.Heads != v.Heads || q.Heads % k.Heads != 0) return false;

        Value Input((Value X, long Heads, long D, Node? Rope, Node? Hadamard) part)
        {
            var x = part.X;
            if (part.Rope is { } r)
            {
                var n = new Emitter(g, att, r.Name).NodeOf("RotaryEmbedding", "_3d", [x, .. r.Inputs.Skip(1)]);
                n.CopyAttributes(r);
                n.SetAttribute("num_heads", part.Heads);
                x = n.Output;
            }
            if (part.Hadamard is not { } h) return x;
            var e = new Emitter(g, att, h.Name);
            var heads = e.Op("Reshape", "_heads", x, e.Int64s("_heads_shape", 0, 0, part.Heads, part.D));
            var hn = e.NodeOf("Hadamard", "_3d", [heads], CustomOps.Domain);
            hn.CopyAttributes(h);
            return e.Op("Reshape", "_merged", hn.Output, e.Int64s("_merged_shape", 0, 0, part.Heads * part.D));
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
