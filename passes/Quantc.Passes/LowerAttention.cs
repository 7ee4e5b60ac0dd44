using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;

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
/// </summary>
public sealed class LowerAttentionPass : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<NoOptions>("lower_attention", PassKind.Lowering,
        "ONNX Attention on the exporters' causal + padding mask → ai.quantc.CausalAttention, which computes only the lower triangle " +
            "(flash-style tiles, grouped-query heads, AVX2 / AVX-512); run after fuse_attention",
        _ => new LowerAttentionPass());

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    // The attributes of ONNX Attention (opset 23) the kernel implements; any other set to a non-default value is refused.
    private static readonly HashSet<string> Known =
        new(StringComparer.Ordinal) { "scale", "q_num_heads", "kv_num_heads", "softmax_precision" };

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        int onnx = 0, lowered = 0, padded = 0;
        var other = new List<string>();
        foreach (var site in ctx.Map.Attention)
        {
            if (site.Form != "Attention") { other.Add(site.Form); continue; }
            onnx++;
            var n = site.Node;
            if (Why(n, out var mask) is { } why) { ctx.Log.Add($"lower_attention: {site.Name} left as ONNX Attention: {why}"); continue; }
            Value? pastK = At(n.Inputs, 4), pastV = At(n.Inputs, 5);
            Value?[] inputs = mask!.KeyPadding is { } keep ? [n.Inputs[0], n.Inputs[1], n.Inputs[2], keep, pastK, pastV]
                : [n.Inputs[0], n.Inputs[1], n.Inputs[2]];
            int outs = n.Outputs.Count(o => o is not null);
            string name = n.Name.EndsWith("/Attention", StringComparison.Ordinal) ? n.Name[..^"/Attention".Length] + "/CausalAttention"
                : n.Name + "_causal";
            var c = new Emitter(g, n, name).NodeOf("CausalAttention", "", TrimTrailingNulls(inputs), domain: CustomOps.Domain,
                outputCount: outs);
            foreach (var a in n.Attributes.Where(a => a.Name is "scale" or "q_num_heads" or "kv_num_heads"))
                c.SetAttribute(a.Proto.Clone());
            for (int i = 0; i < outs; i++) g.ReplaceValue(n.Outputs[i]!, c.Outputs[i]!);
            lowered++;
            if (mask.KeyPadding is not null) padded++;
        }
        string others = other.Count == 0 ? "" : $"; {other.Count} attention(s) of other forms left ({string.Join(", ", other.Distinct())})";
        if (onnx == 0)
        {
            ctx.Log.Add($"lower_attention: no ONNX Attention in the model (fuse_attention makes them){others}");
            return;
        }
        if (lowered > 0)
        {
            g.RemoveDeadCode();
            g.SortTopologically();
            ctx.Model.SetOpset(CustomOps.Domain, 1);
        }
        ctx.Log.Add($"lower_attention: {lowered} of {onnx} ONNX Attention node(s) → ai.quantc.CausalAttention (lower triangle only" +
            $"{(padded > 0 ? $", {padded} with the padding mask read from the model's attention_mask input" : "")}){others}");
    }

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

    private static bool IsDefault(Quantc.Ir.Attribute a) => a.Proto is { HasI: true, I: 0 } or { HasF: true, F: 0 };

    private static T? At<T>(IReadOnlyList<T?> list, int i) where T : class => i < list.Count ? list[i] : null;

    private static Value?[] TrimTrailingNulls(Value?[] inputs)
    {
        int n = inputs.Length;
        while (n > 0 && inputs[n - 1] is null) n--;
        return inputs[..n];
    }
}
