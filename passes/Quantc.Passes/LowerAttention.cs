using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;
using Quantc.Ir.Patterns;

namespace Quantc.Passes;

/// <summary>
/// LowerAttention: every ONNX <c>Attention</c> (what fuse_attention emits) whose additive mask is the exporters' causal +
/// padding mask (<see cref="CausalMask"/>) becomes <c>ai.quantc.CausalAttention</c> on the same Q, K, V and cache tensors,
/// with the model's int64 <c>attention_mask</c> input in place of the float mask: the kernel computes only the lower
/// triangle (plus the past cache) in flash-style tiles, where ONNX Runtime's CPU Attention computes and masks the whole
/// S × T square. Same function as ONNX Runtime's Attention within float rounding (a left-padded query, which sees no key,
/// gets zeros from both).
/// Any other attention — no mask, another mask, attributes the op lacks, a float16 graph — is left as it is, with the
/// reason in the log; the mask's ops go when no other node reads them.
/// com.microsoft GroupQueryAttention (ONNX Runtime GenAI's model builder shape) is lowered too when its seqlens_k is computed
/// from an int64 attention_mask graph input, which the op then reads; RoPE inside GQA (do_rotary), a local window, softcap
/// and the other extras are refused with the reason.
/// With a cache and the padding mask, the nodes in front go inside the op too (its fused form, custom-ops/README.md): the
/// queries' and keys' RotaryEmbedding, rotate_qk's Hadamard between its Reshapes and a fused QKV projection's Split — 9 nodes per
/// decoder layer of a quarot-w4a8 graph. What is not taken, and why, is in the log.
/// </summary>
public sealed class LowerAttentionPass(bool int8 = false) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<LowerAttentionOptions>("lower_attention", PassKind.Lowering,
        "ONNX Attention on the exporters' causal + padding mask → ai.quantc.CausalAttention, which computes only the lower triangle " +
            "(flash-style tiles, grouped-query heads, AVX2 / AVX-512), with the RoPE, R3 Hadamard and QKV Split in front taken " +
            "inside; run after fuse_attention and fuse_projections",
        o => new LowerAttentionPass(o.Int8));

    /// <summary>The options of <see cref="LowerAttentionPass"/>.</summary>
    public sealed record LowerAttentionOptions : PassOptions
    {
        [Option("prefill's Q·Kᵀ and P·V in int8 (per-row scales, u8 softmax numerators per key block; the op's int8 attribute): " +
            "faster on AVX-512 VNNI, an approximation everywhere; decode steps stay float")]
        public bool Int8 { get; init; }
    }

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    // The attributes of ONNX Attention (opset 23) the kernel implements; any other set to a non-default value is refused.
    private static readonly HashSet<string> Known =
        new(StringComparer.Ordinal) { "scale", "q_num_heads", "kv_num_heads", "softmax_precision" };

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        int onnx = 0, lowered = 0, padded = 0, gqas = 0, gqaLowered = 0, storedLowered = 0;
        var other = new List<string>();
        var fused = new Dictionary<string, int>(StringComparer.Ordinal);
        var notFused = new List<string>();
        string? firstWhy = null;
        foreach (var site in ctx.Map.Attention)
        {
            bool gqa = site.Form == "GroupQueryAttention";
            if (!gqa && site.Form != "Attention") { other.Add(site.Form); continue; }
            var n = site.Node;
            Value?[] inputs;
            Value? pastK, pastV;
            long qh, kvh;
            bool keyPadding;
            if (gqa)
            {
                gqas++;
                if (WhyGqa(n, out var mask) is { } why)
                {
                    ctx.Log.Add($"lower_attention: {site.Name} left as GroupQueryAttention: {why}");
                    firstWhy ??= $"{site.Name}: {why}";
                    continue;
                }
                pastK = At(n.Inputs, 3);
                pastV = At(n.Inputs, 4);
                inputs = [n.Inputs[0], n.Inputs[1], n.Inputs[2], mask, pastK, pastV];
                qh = n.GetInt("num_heads", 0);
                kvh = n.GetInt("kv_num_heads", 0);
                keyPadding = true;
            }
            else
            {
                onnx++;
                if (Why(n, out var mask) is { } why)
                {
                    ctx.Log.Add($"lower_attention: {site.Name} left as ONNX Attention: {why}");
                    continue;
                }
                pastK = At(n.Inputs, 4);
                pastV = At(n.Inputs, 5);
                inputs = mask!.KeyPadding is { } keep ? [n.Inputs[0], n.Inputs[1], n.Inputs[2], keep, pastK, pastV]
                    : [n.Inputs[0], n.Inputs[1], n.Inputs[2]];
                qh = n.GetInt("q_num_heads", 0);
                kvh = n.GetInt("kv_num_heads", 0);
                keyPadding = mask.KeyPadding is not null;
            }
            var inside = Inside(n, qh, kvh, site.HeadDim, out var insideWhy);
            if (inside is not null && inputs.Length == 6 && pastK is not null)
            {
                inputs = inside.Packed is { } qkv ? [qkv, qkv, qkv, inputs[3], pastK, pastV, inside.Cos, inside.Sin, inside.Positions]
                    : [inside.Q, inside.K, n.Inputs[2], inputs[3], pastK, pastV, inside.Cos, inside.Sin, inside.Positions];
                fused[inside.Describe()] = fused.GetValueOrDefault(inside.Describe()) + 1;
            }
            else
            {
                insideWhy ??= "no past cache or no padding mask (the op takes them before the rotary inputs)";
                if (inside is not null || insideWhy != NothingInFront) notFused.Add($"{site.Name}: {insideWhy}");
                inside = null;
            }
            int outs = n.Outputs.Take(3).Count(o => o is not null);
            string suffix = gqa ? "/GroupQueryAttention" : "/Attention";
            string name = n.Name.EndsWith(suffix, StringComparison.Ordinal) ? n.Name[..^suffix.Length] + "/CausalAttention"
                : n.Name + "_causal";
            var c = new Emitter(g, n, name).NodeOf("CausalAttention", "", TrimTrailingNulls(inputs), domain: CustomOps.Domain,
                outputCount: outs);
            if (gqa)
            {
                c.SetAttribute("q_num_heads", qh);
                c.SetAttribute("kv_num_heads", kvh);
                if (n.Attributes.FirstOrDefault(a => a.Name == "scale") is { Proto.F: not 0 } sc) c.SetAttribute(sc.Proto.Clone());
                if (StoredCache(n, out _) is var (bits, ks, vs))
                {
                    c.SetAttribute("kv_cache_bit_width", bits);
                    c.SetAttribute(KvNative.Floats("k_cache_scale", ks));
                    c.SetAttribute(KvNative.Floats("v_cache_scale", vs));
                    storedLowered++;
                }
            }
            else
            {
                foreach (var a in n.Attributes.Where(a => a.Name is "scale" or "q_num_heads" or "kv_num_heads"))
                    c.SetAttribute(a.Proto.Clone());
            }
            if (inside is not null)
            {
                if (inside.Packed is not null) c.SetAttribute("packed_qkv", 1L);
                if (inside.Cos is not null)
                {
                    if (inside.Interleaved) c.SetAttribute("rotary_interleaved", 1L);
                    if (inside.RotaryDim != 0) c.SetAttribute("rotary_embedding_dim", inside.RotaryDim);
                }
                if (inside.Hadamard) c.SetAttribute("qk_hadamard", 1L);
            }
            if (int8) c.SetAttribute("int8", 1L);
            for (int i = 0; i < outs; i++) g.ReplaceValue(n.Outputs[i]!, c.Outputs[i]!);
            if (gqa) gqaLowered++;
            else lowered++;
            if (!gqa && keyPadding) padded++;
        }
        string others = other.Count == 0 ? "" : $"; {other.Count} attention(s) of other forms left ({string.Join(", ", other.Distinct())})";
        if (onnx == 0 && gqas == 0)
        {
            ctx.Log.Add($"lower_attention: no ONNX Attention in the model (fuse_attention makes them){others}");
            return;
        }
        if (lowered + gqaLowered > 0)
        {
            g.RemoveDeadCode();
            g.SortTopologically();
            ctx.Model.SetOpset(CustomOps.Domain, 1);
        }
        string int8Note = int8 ? "; int8: prefill's Q·Kᵀ and P·V in int8, decode steps in float" : "";
        if (onnx > 0 || gqas == 0)
            ctx.Log.Add($"lower_attention: {lowered} of {onnx} ONNX Attention node(s) → ai.quantc.CausalAttention (lower triangle only" +
                $"{(padded > 0 ? $", {padded} with the padding mask read from the model's attention_mask input" : "")}" +
                $"{(lowered > 0 ? int8Note : "")}){others}");
        if (gqas > 0)
            ctx.Log.Add($"lower_attention: {gqaLowered} of {gqas} com.microsoft GroupQueryAttention node(s) → " +
                "ai.quantc.CausalAttention (lower triangle only, the padding read from the attention_mask behind seqlens_k" +
                $"{(gqaLowered > 0 ? int8Note : "")}){(onnx > 0 ? "" : others)}");
        if (storedLowered > 0)
            ctx.Log.Add($"lower_attention: {storedLowered} with the cache stored as integers (the same bytes, the scales as attributes)");
        if (lowered + gqaLowered == 0 && gqas > 0)
            ctx.Notice($"lower_attention: none of the {gqas} GroupQueryAttention node(s) lowered (first: {firstWhy ?? "see the log"})");
        foreach (var (what, count) in fused)
            ctx.Log.Add($"lower_attention: {count} with {what} inside the op (fewer nodes per decode step)");
        foreach (var why in notFused) ctx.Log.Add($"lower_attention: {why}; the nodes in front stay");
    }

    private const string NothingInFront = "no RotaryEmbedding, R3 Hadamard or QKV Split in front";

    /// <summary>What the op takes over from the nodes in front of an Attention: the queries' and keys' RotaryEmbedding (ONNX, opset
    /// 23, on the 3-D projections with position ids and constant [positions, rotary dim / 2] caches), rotate_qk's Hadamard between
    /// Reshapes, and the Split of a fused QKV projection.</summary>
    private sealed record InsideOp(Value Q, Value K, Value? Packed, Value? Cos, Value? Sin, Value? Positions, bool Interleaved,
        long RotaryDim, bool Hadamard)
    {
        public string Describe() => string.Join(", ", new[]
        {
            Cos is null ? null : "RoPE", Hadamard ? "the R3 Hadamard" : null, Packed is null ? null : "the QKV split",
        }.Where(x => x is not null));
    }

    /// <summary>The nodes in front of <paramref name="n"/>'s Q and K (and V) that the op can run inside; null with the reason (or
    /// <see cref="NothingInFront"/>). Each absorbed value must be read by the chain alone, and Q and K must agree.</summary>
    private static InsideOp? Inside(Node n, long qh, long kvh, long? headDim, out string? why)
    {
        why = null;
        if (headDim is not { } d || n.Inputs.Count < 3 || n.Inputs[0] is not { } q0 || n.Inputs[1] is not { } k0
            || n.Inputs[2] is not { } v)
        {
            why = NothingInFront;
            return null;
        }
        if (qh <= 0 || kvh <= 0)
        {
            // [batch, heads, sequence, head size]: only a Hadamard straight in front of Q and K (rotate_qk on eager attention).
            static Node? Had(Value x) => x is { IsSingleUse: true, Producer: { } h } && h.Is("Hadamard", CustomOps.Domain)
                && h.GetInt("normalize", 1) == 1 ? h : null;
            if (Had(q0) is { } hq && Had(k0) is { } hk && hq.Inputs[0] is { } qb && hk.Inputs[0] is { } kb)
                return new InsideOp(qb, kb, null, null, null, null, false, 0, true);
            why = Had(q0) is null && Had(k0) is null ? NothingInFront : "the R3 Hadamard is on only one of the queries and keys";
            return null;
        }
        var (q1, qHad) = BehindHadamard(q0, qh, d);
        var (k1, kHad) = BehindHadamard(k0, kvh, d);
        var qRope = Rope(q1, qh);
        var kRope = Rope(k1, kvh);
        if (qHad != kHad) { why = "the R3 Hadamard is on only one of the queries and keys"; return null; }
        if ((qRope is null) != (kRope is null)) { why = "RotaryEmbedding is on only one of the queries and keys"; return null; }
        if (qRope is { } qr && kRope is { } kr && !(qr.Inputs[1] == kr.Inputs[1] && qr.Inputs[2] == kr.Inputs[2] &&
            qr.Inputs[3] == kr.Inputs[3] && qr.GetInt("interleaved", 0) == kr.GetInt("interleaved", 0) &&
            qr.GetInt("rotary_embedding_dim", 0) == kr.GetInt("rotary_embedding_dim", 0)))
        {
            why = "the queries' and keys' RotaryEmbedding differ (tables, positions or attributes)";
            return null;
        }
        Value q = qRope?.Inputs[0] ?? q1, k = kRope?.Inputs[0] ?? k1;
        Value? packed = null;
        if (q.Producer is { } sp && sp.Is("Split") && k.Producer == sp && v.Producer == sp && sp.Outputs.Count == 3
            && q.ProducerOutputIndex == 0 && k.ProducerOutputIndex == 1 && v.ProducerOutputIndex == 2
            && q.IsSingleUse && k.IsSingleUse && v.IsSingleUse && sp.Inputs[0] is { } x
            && sp.GetInt("axis", 0) is -1 or 2
            && Constants.Ints(Constants.Of(At(sp.Inputs, 1))) is [var a, var b, var c] && a == qh * d && b == kvh * d && c == kvh * d)
            packed = x;
        if (!qHad && qRope is null && packed is null) { why = NothingInFront; return null; }
        if (qRope is { } rope)
        {
            long rd = rope.GetInt("rotary_embedding_dim", 0);
            if (rd < 0 || rd % 2 != 0 || rd > d)
                { why = $"RotaryEmbedding's rotary_embedding_dim {rd} is not an even size ≤ the head size {d}"; return null; }
            if (Constants.Of(rope.Inputs[1])!.Dims[1] * 2 is var cw && cw != (rd == 0 ? d : rd))
                { why = $"RotaryEmbedding's cos cache covers {cw} dims, not the rotary dim {(rd == 0 ? d : rd)}"; return null; }
        }
        return new InsideOp(q, k, packed, qRope?.Inputs[1], qRope?.Inputs[2], qRope?.Inputs[3], qRope?.GetInt("interleaved", 0) == 1,
            qRope?.GetInt("rotary_embedding_dim", 0) ?? 0, qHad);
    }

    /// <summary>rotate_qk's Reshape([0, 0, heads or −1, d]) → ai.quantc.Hadamard(normalize = 1) → Reshape([0, 0, heads · d or −1])
    /// behind <paramref name="x"/>: the value in front and true; else x and false.</summary>
    private static (Value, bool) BehindHadamard(Value x, long heads, long d)
    {
        if (x.Producer is { } merge && merge.Is("Reshape") && Constants.Ints(Constants.Of(At(merge.Inputs, 1))) is [0, 0, var w]
            && (w == -1 || w == heads * d)
            && merge.Inputs[0] is { IsSingleUse: true, Producer: { } h } && h.Is("Hadamard", CustomOps.Domain)
            && h.GetInt("normalize", 1) == 1
            && h.Inputs[0] is { IsSingleUse: true, Producer: { } split } && split.Is("Reshape")
            && Constants.Ints(Constants.Of(At(split.Inputs, 1))) is [0, 0, var hh, var hd] && hd == d && (hh == -1 || hh == heads)
            && split.Inputs[0] is { } before && x.IsSingleUse)
            return (before, true);
        return (x, false);
    }

    /// <summary>The ONNX RotaryEmbedding producing <paramref name="x"/> when the op can run it: the 3-D form with num_heads =
    /// <paramref name="heads"/>, position ids, constant 2-D caches, and x read by the attention alone.</summary>
    private static Node? Rope(Value x, long heads) =>
        x is { IsSingleUse: true, Producer: { } r } && r.Is("RotaryEmbedding") && r.IsOnnxDomain && r.Inputs.Count == 4
        && r.Inputs[3] is { ElementType: 7 } && r.GetInt("num_heads", 0) == heads
        && Constants.Of(r.Inputs[1]) is { Dims.Length: 2 } && Constants.Of(r.Inputs[2]) is { Dims.Length: 2 } ? r : null;

    /// <summary>Why <paramref name="n"/> cannot become CausalAttention; null (and its mask) when it can.</summary>
    private static string? Why(Node n, out CausalMask? mask)
    {
        mask = null;
        if (n.Attributes.FirstOrDefault(a => !Known.Contains(a.Name) && !IsDefault(a)) is { } attr)
            return $"attribute {attr.Name} is set (the causal kernel has no such option)";
        if (At(n.Inputs, 6) is not null) return "nonpad_kv_seqlen is given";
        if (At(n.Outputs, 3) is not null) return "the Q·Kᵀ output is asked for";
        if (n.Inputs[0] is { ElementType: not (0 or 1) } q) return $"element type {q.ElementType} (the kernel is float32)";
        if ((At(n.Inputs, 4) is null) != (At(n.Inputs, 5) is null)) return "only one of past_key and past_value is given";
        if ((At(n.Outputs, 1) is null) != (At(n.Outputs, 2) is null)) return "only one of present_key and present_value is asked for";
        if (CausalMask.Match(At(n.Inputs, 3), out var why) is not { } m) return why;
        if (m.KeyPadding is null && At(n.Inputs, 4) is not null)
            return "a causal mask with no padding input and a KV cache (the op takes attention_mask before past_key)";
        mask = m;
        return null;
    }

    // GroupQueryAttention's attributes the lowering maps (num_heads, kv_num_heads, scale) or accepts at these values.
    private static readonly Dictionary<string, long> GqaNeutral = new(StringComparer.Ordinal)
    {
        ["do_rotary"] = 0, ["rotary_interleaved"] = 0, ["local_window_size"] = -1, ["smooth_softmax"] = 0, ["qk_output"] = 0,
    };

    /// <summary>Why the GroupQueryAttention <paramref name="n"/> cannot become CausalAttention; null (and the int64 attention_mask
    /// graph input its seqlens_k is computed from) when it can. GQA reads padding only as seqlens_k = Σ mask − 1 (the valid
    /// keys first, padding on the right); the op reads the mask itself, which gives the same outputs at the valid positions of
    /// such rows (and follows the mask where GQA cannot express the padding, e.g. on the left).</summary>
    private static string? WhyGqa(Node n, out Value? mask)
    {
        mask = null;
        foreach (var a in n.Attributes)
        {
            if (a.Name is "num_heads" or "kv_num_heads" or "scale") continue;
            // A cache stored as integers (quantize_kv storage: native): the op takes the same bytes with the scales as attributes.
            if (a.Name is "k_quant_type" or "v_quant_type" or "kv_cache_bit_width" && StoredCache(n, out _) is not null) continue;
            if (a.Name == "softcap" && a.Proto is { HasF: true, F: 0 }) continue;
            if (GqaNeutral.TryGetValue(a.Name, out var neutral) && a.Proto.HasI && a.Proto.I == neutral) continue;
            if (a.Name == "rotary_interleaved" && n.GetInt("do_rotary", 0) == 0) continue;
            return a.Name == "do_rotary" ? "RoPE inside GroupQueryAttention (do_rotary = 1; the op takes RoPE with explicit position ids)"
                : $"attribute {a.Name} is set (the causal kernel has no such option)";
        }
        if (n.GetInt("num_heads", 0) <= 0 || n.GetInt("kv_num_heads", 0) <= 0) return "num_heads or kv_num_heads missing";
        if (At(n.Inputs, 1) is null || At(n.Inputs, 2) is null) return "packed QKV in the query input (no separate key and value)";
        if (n.Inputs[0] is { ElementType: not (0 or 1) } q) return $"element type {q.ElementType} (the kernel is float32)";
        if (n.Inputs[0] is { Shape: { Length: not 3 } qs }) return $"the query has rank {qs.Length} (not [batch, sequence, hidden])";
        if ((At(n.Inputs, 3) is null) != (At(n.Inputs, 4) is null)) return "only one of past_key and past_value is given";
        bool stored = StoredCache(n, out var storedWhy) is not null;
        if (storedWhy is not null) return storedWhy;
        if (Enumerable.Range(7, Math.Max(0, n.Inputs.Count - 7)).FirstOrDefault(i => n.Inputs[i] is not null && !(stored && i is 12 or 13))
            is var extra and > 0)
            return $"input {extra} is given (cos/sin caches, position ids, attention bias or head sink)";
        if (n.Outputs.Count > 3 && n.Outputs.Skip(3).Any(o => o is not null)) return "the Q·Kᵀ output is asked for";
        if ((At(n.Outputs, 1) is null) != (At(n.Outputs, 2) is null)) return "only one of present_key and present_value is asked for";
        mask = SeqlensMask(At(n.Inputs, 5));
        return mask is null
            ? "seqlens_k is not Cast(ReduceSum(attention_mask, axis 1) − 1) of an int64 [batch, total] graph input (the op reads the " +
                "padding from the mask)"
            : null;
    }

    /// <summary>A GroupQueryAttention's cache stored as integers (k_quant_type / v_quant_type PER_CHANNEL or PER_TENSOR alike,
    /// kv_cache_bit_width 8 or 4) with constant scales at inputs 12 / 13: the bits and the scales flattened (one, or one per KV head
    /// and channel); null when the cache is float — or, with <paramref name="why"/>, when the op could not take it.</summary>
    private static (long Bits, float[] K, float[] V)? StoredCache(Node n, out string? why)
    {
        why = null;
        string kt = n.GetString("k_quant_type") ?? "NONE", vt = n.GetString("v_quant_type") ?? "NONE";
        long bits = n.GetInt("kv_cache_bit_width", 0);
        if (kt == "NONE" && vt == "NONE" && bits == 0) return null;
        float[]? k = Constants.Of(At(n.Inputs, 12))?.ToFloat32(), v = Constants.Of(At(n.Inputs, 13))?.ToFloat32();
        long width = n.GetInt("kv_num_heads", 0) * (At(n.Inputs, 3)?.Shape is { Length: 4 } ps && ps[3] is > 0 and var w
            ? w * (bits == 4 ? 2 : 1) : 0);
        why = kt != vt || kt is not ("PER_CHANNEL" or "PER_TENSOR") ? $"cache quantization {kt} / {vt} (the op takes PER_CHANNEL or " +
                "PER_TENSOR for both)"
            : bits is not (8 or 4) ? $"kv_cache_bit_width {bits}"
            : k is null || v is null ? "the cache scales (inputs 12, 13) are not constants"
            : k.Length != v.Length || (k.Length != 1 && k.Length != width) ? $"{k.Length} / {v.Length} cache scales for a width of {width}"
            : null;
        return why is null ? (bits, k!, v!) : null;
    }

    /// <summary>The int64 graph input m behind seqlens_k = Cast(Sub(ReduceSum(m, axes [1], keepdims 0), 1)), else null.</summary>
    private static Value? SeqlensMask(Value? seqlens)
    {
        if (seqlens is not { Producer: { } cast } || !cast.Is("Cast") || cast.Inputs[0]?.Producer is not { } sub || !sub.Is("Sub")
            || Constants.Of(At(sub.Inputs, 1)) is not { } one || Constants.Ints(one) is not [1]
            || sub.Inputs[0]?.Producer is not { } sum || !sum.Is("ReduceSum") || sum.GetInt("keepdims", 1) != 0)
            return null;
        long[]? axes = sum.Inputs.Count > 1 ? Constants.Ints(Constants.Of(sum.Inputs[1])) : sum.GetInts("axes")?.ToArray();
        if (axes is not ([1] or [-1]) || sum.Inputs[0] is not { ElementType: 7, Shape.Length: 2 } m || m.Producer is not null) return null;
        return m;
    }

    private static bool IsDefault(Quantc.Ir.Attribute a) => a.Proto is { HasI: true, I: 0 } or { HasF: true, F: 0 };

    private static T? At<T>(IReadOnlyList<T?> list, int i) where T : class => i < list.Count ? list[i] : null;

    private static Value?[] TrimTrailingNulls(Value?[] inputs)
    {
        int n = inputs.Length;
        while (n > 0 && inputs[n - 1] is null) n--;
        return inputs[..n];
    }
}
