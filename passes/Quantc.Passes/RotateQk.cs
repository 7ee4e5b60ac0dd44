using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Onnx;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// RotateQk (QuaRot's R3): an online Hadamard transform per head on the queries and on the keys after RoPE,
/// q' = q·Hᵀ/√d and k' = k·Hᵀ/√d along head_dim, so q'·k'ᵀ = q·HᵀH·kᵀ/d = q·kᵀ: the attention scores are
/// unchanged, and the keys — with their RoPE-induced outlier channels spread over the head — quantize far
/// better (<c>quantize_kv</c>). The keys are rotated where this step's keys enter (before the Concat with the
/// past), so the key cache is held rotated: present.*.key comes out as k', and a past fed back must be k'
/// too (the model's own present outputs are). The metadata says so (<c>quantc.key_cache_rotation</c>,
/// read by <see cref="CacheTransforms"/>; <c>quantc verify</c> undoes it). Eager attention (torch export)
/// and com.microsoft GroupQueryAttention fed by separate RotaryEmbedding ops are handled; a
/// GroupQueryAttention applying RoPE inside (do_rotary = 1) has no query or key after RoPE in the graph and is
/// left alone, as is a head size without a Hadamard matrix — each with the reason in the log. Emits
/// ai.quantc.Hadamard, or with <c>portable</c> a MatMul by the constant Hᵀ/√d.
/// </summary>
public sealed class RotateQkPass(bool portable) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<PortableOptions>("rotate_qk", PassKind.FunctionPreserving,
        "QuaRot R3: online Hadamard per head on the queries and keys after RoPE (eager attention, GroupQueryAttention without do_rotary, " +
            "MultiHeadAttention); the key cache stays rotated",
        o => new RotateQkPass(o.Portable));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>The metadata key naming the key-cache tensors held rotated: <c>HEAD_SIZE:NAME,NAME…</c> (see <see
    /// cref="CacheTransforms"/>).</summary>
    public const string CacheMetadataKey = CacheTransforms.KeyKey;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var sites = ctx.Map.Attention;
        if (ctx.Model.Metadata.FirstOrDefault(kv => kv.Key == CacheTransforms.KeyScaleKey).Value is { Length: > 0 })
            throw new BadInputException($"rotate_qk: the model's key cache is already scaled per channel by fireq_rope " +
                $"({CacheTransforms.KeyScaleKey}); the Hadamard rotation does not commute with that scale");
        if (sites.Count == 0)
            { ctx.Log.Add("rotate_qk: no attention found (eager MatMul/Softmax/MatMul, GroupQueryAttention or " +
            "MultiHeadAttention)"); return; }
        var cache = new List<(long Size, string Name)>();
        foreach (var a in sites)
        {
            string? why = a.RopeInside ?? (a.Keys is null ? a.KeysWhy : null)
                ?? (a.HeadDim is not { } hd0 ? "head size unknown" : !Hadamard.IsSupported(hd0)
                    ? $"no Hadamard matrix of order {hd0} (the head size)" : null);
            if (why is not null) { ctx.Log.Add($"rotate_qk: {a.Name} ({a.Form}) skipped: {why}"); continue; }
            long d = a.HeadDim!.Value;
            var keys = a.Keys!;
            Rotate(ctx, g, a.Query, d, a.QueryOneHeadLast, a.Name + "/q_hadamard");
            foreach (var src in keys.Sources) Rotate(ctx, g, src, d, keys.OneHeadLast, a.Name + "/k_hadamard");
            foreach (var v in keys.Values) if (!v.IsGraphOutput) ctx.Provenance.RecordTransformed(v.Name, "R3");
            cache.AddRange(keys.CacheOutputs.Concat(keys.CacheInputs).Select(n => (d, n)));
            string via = keys.CacheOutputs.Count + keys.CacheInputs.Count > 0
                ? $"; key cache in the rotated basis: {string.Join(", ", keys.CacheInputs.Concat(keys.CacheOutputs))}" : "";
            ctx.Log.Add($"rotate_qk: {a.Name} ({a.Form}): query and {keys.Sources.Count} key input(s) rotated by " +
                $"Hadamard {d}{(portable ? " (MatMul)" : "")}{via}");
        }
        if (cache.Count > 0)
        {
            var prior = ctx.Model.Metadata.FirstOrDefault(kv => kv.Key == CacheMetadataKey).Value;
            if (!string.IsNullOrEmpty(prior))
                throw new BadInputException($"rotate_qk: the model's key cache is already rotated ({CacheMetadataKey} = '{prior}')");
            ctx.Model.SetMetadata(CacheMetadataKey,
                string.Join("|",
                cache.GroupBy(c => c.Size).Select(gr => $"{gr.Key}:{string.Join(",", gr.Select(c => c.Name).Distinct())}")));
        }
    }

    /// <summary>The input at <paramref name="slot"/> replaced by x·Hᵀ/√d per head (reshaped to [.., heads, d] and back when its last axis
    /// holds whole heads).</summary>
    private void Rotate(PassContext ctx, Graph g, Use slot, long d, bool oneHeadLast, string name)
    {
        var x = slot.Node.Inputs[slot.InputIndex]!;
        var before = slot.Node;
        var e = new Emitter(g, before, name);
        Value y = x;
        if (!oneHeadLast) y = e.Reshape(y, [0, 0, -1, d], "/split");
        if (portable) y = OnlineHadamardPass.HadamardMatMul(g, y, d, name, before, 1 / Math.Sqrt(d));
        else
        {
            ctx.Model.SetOpset(CustomOps.Domain, 1);
            var n = e.Node("Hadamard", CustomOps.Domain, "", y);
            n.SetAttribute("normalize", 1L);
            y = n.Output;
        }
        ctx.Provenance.RecordTransformed(y.Name, "R3");
        if (!oneHeadLast) { y = e.Reshape(y, [0, 0, -1], "/merge"); ctx.Provenance.RecordTransformed(y.Name, "R3"); }
        slot.Node.SetInput(slot.InputIndex, y);
    }
}
