using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// FuseProjections: MatMuls that read the same input — q/k/v after the input norm, gate/up after the
/// post-attention norm — become one MatMul on their weights concatenated along N, followed by a Split that
/// gives each projection its output back (names kept). Fewer, wider GEMMs: one kernel launch instead of three
/// (or two) per group, which is most of the gain in decode, and a wider N for the int8 and int4 kernels at
/// prefill. Works on what the other lowering passes leave: float weights, int8 per-channel weights behind
/// DequantizeLinear(axis 1), int4 weights blocked along K behind DequantizeLinear(axis 0, block_size) — which
/// ONNX Runtime still fuses into MatMulIntegerToFloat / MatMulNBits — and ai.quantc.MatMulInt4Int8
/// (FuseProjectionsInt4Int8.cs). The projections of a group must agree on
/// the weight's type, its quantization axis and block size and its zero-point type; a projection whose weight
/// is shared or not a constant stays on its own, with the reason in the log. Exact: every output column is
/// computed from the same numbers as before.
/// </summary>
public sealed partial class FuseProjectionsPass(bool swiglu = true) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<FuseProjectionsOptions>("fuse_projections", PassKind.Lowering,
        "MatMuls reading the same input (q/k/v, gate/up) → one MatMul on the weights concatenated along N and a Split (float, int8 " +
            "per-channel or int4 blocked QDQ weights; ai.quantc.MatMulInt4Int8, whose gate/up takes its SwiGLU inside); run last",
        o => new FuseProjectionsPass(o.Swiglu));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>One projection: its MatMul and the weight as stored (float, or quantized behind a DequantizeLinear).</summary>
    private sealed record Projection(Node MatMul, Value Values, Node? Dequantize, long K, long N)
    {
        /// <summary>The layer's name (model.layers.0.self_attn.q_proj), else the node's.</summary>
        public string Layer { get; init; } = MatMul.Name;

        public string Signature => Dequantize is null
            ? $"float {Values.ElementType}"
            : $"dq {Values.ElementType} axis {Dequantize.GetInt("axis", 1)} block {Dequantize.GetInt("block_size", 0)} " +
                $"zp {Dequantize.Inputs.ElementAtOrDefault(2)?.ElementType ?? 0} scale {Dequantize.Inputs[1]!.ElementType}";
    }

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var layerOf = ctx.Map.Linears.ToDictionary(l => l.Node, l => l.Name, (IEqualityComparer<Node>)ReferenceEqualityComparer.Instance);
        int groups = 0, fused = 0;
        var byInput = g.Nodes.Where(n => n.Is("MatMul") && n.Inputs.Count == 2 && n.Inputs[0] is not null)
            .GroupBy(n => n.Inputs[0]!, (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance).Where(x => x.Count() > 1).ToList();
        foreach (var readers in byInput)
        {
            var projections = new List<Projection>();
            foreach (var mm in readers)
            {
                string layer = layerOf.GetValueOrDefault(mm) ?? LayerFromWeight(ctx, mm) ?? mm.Name;
                if (Describe(mm, out string? why) is { } p) projections.Add(p with { Layer = layer });
                else if (why is not null) ctx.Log.Add($"fuse_projections: {layer} stays on its own: {why}");
            }
            foreach (var set in projections.GroupBy(p => (p.Signature, p.K)).Where(s => s.Count() > 1))
            {
                Fuse(ctx, g, set.ToList());
                groups++;
                fused += set.Count();
            }
        }
        var (int4Groups, int4Fused) = FuseInt4Int8(ctx, g, layerOf, swiglu);   // FuseProjectionsInt4Int8.cs
        groups += int4Groups;
        fused += int4Fused;
        if (groups == 0) { ctx.Log.Add("fuse_projections: no MatMuls that share an input to fuse"); return; }
        g.RemoveDeadCode();
        ctx.Log.Add($"fuse_projections: {fused} MatMuls → {groups} (weights concatenated along N, a Split after each)");
    }

    private static Projection? Describe(Node mm, out string? why)
    {
        why = null;
        var w = mm.Inputs[1]!;
        bool constant = w.Initializer is not null ||
            (w.Producer is { } p0 && p0.Is("DequantizeLinear") && p0.Inputs[0]?.Initializer is not null);
        if (!constant) return null;   // an activation × activation MatMul (attention scores left unfused): not a projection
        if (w.Uses.Count != 1 || w.IsGraphOutput) { why = $"its weight '{w.Name}' is also read elsewhere"; return null; }
        if (w.Initializer is { Dims.Length: 2 } t && w.ElementType == (int)DT.Float)
            return new Projection(mm, w, null, t.Dims[0], t.Dims[1]);
        if (w.Producer is { } dq && dq.Is("DequantizeLinear") && dq.Inputs[0]?.Initializer is { Dims.Length: 2 } q &&
            dq.Inputs[1]?.Initializer is not null
            && (dq.Inputs.Count < 3 || dq.Inputs[2] is null || dq.Inputs[2]!.Initializer is not null))
        {
            if (dq.Inputs[0]!.Uses.Count != 1 || dq.Inputs[1]!.Uses.Count != 1 ||
                (dq.Inputs.ElementAtOrDefault(2) is { } z && z.Uses.Count != 1))
            {
                why = $"its quantized weight '{dq.Inputs[0]!.Name}' (or its scale or zero point) is shared";
                return null;
            }
            long axis = dq.GetInt("axis", 1), block = dq.GetInt("block_size", 0);
            bool perChannel = axis == 1 && block == 0 && q.DataType is (int)DT.Int8 or (int)DT.Uint8;
            bool blocked = axis == 0 && block > 0 && q.DataType is (int)DT.Int4 or (int)DT.Uint4;
            long[] scaleDims = perChannel ? [q.Dims[1]] : blocked && q.Dims[0] % block == 0 ? [q.Dims[0] / block, q.Dims[1]] : [];
            bool shaped = dq.Inputs[1]!.Initializer!.Dims.SequenceEqual(scaleDims)
                && (dq.Inputs.ElementAtOrDefault(2)?.Initializer is not { } zt || zt.Dims.SequenceEqual(scaleDims));
            if ((perChannel || blocked) && shaped) return new Projection(mm, dq.Inputs[0]!, dq, q.Dims[0], q.Dims[1]);
            why = $"its weight is dequantized along axis {axis} with block size {block} ({Quantc.Onnx.DataTypes.Name(q.DataType)}), " +
                $"which is not concatenated";
            return null;
        }
        string what = w.Initializer is { } ti
            ? $"{Quantc.Onnx.DataTypes.Name(ti.DataType)} [{string.Join(", ", ti.Dims)}] initializer"
            : "DequantizeLinear of a non-2-D or non-constant tensor";
        why = $"its weight is a {what}, not a 2-D float32 or per-channel/blocked quantized weight";
        return null;
    }

    private static void Fuse(PassContext ctx, Graph g, List<Projection> set)
    {
        string name = PackedName(set.Select(p => p.Layer).ToList());
        var first = set.Select(p => p.MatMul).OrderBy(m => IndexOf(g, m)).First();
        var e = new Emitter(g, first, name);
        Value weight;
        if (set[0].Dequantize is null)
            weight = ConcatTensor(g, name + ".weight", set.Select(p => p.Values.Initializer!).ToList());
        else
        {
            var dq0 = set[0].Dequantize!;
            var values = ConcatTensor(g, name + ".weight_q", set.Select(p => p.Values.Initializer!).ToList());
            var scale = ConcatTensor(g, name + ".weight_scale", set.Select(p => p.Dequantize!.Inputs[1]!.Initializer!).ToList());
            var inputs = new List<Value?> { values, scale };
            if (dq0.Inputs.ElementAtOrDefault(2) is not null)
                inputs.Add(ConcatTensor(g, name + ".weight_zero_point", set.Select(p => p.Dequantize!.Inputs[2]!.Initializer!).ToList()));
            var dq = e.NodeOf("DequantizeLinear", "/weight_dq", inputs);
            dq.CopyAttributes(dq0);
            weight = dq.Output;
        }
        // The packed tensors stand for the float weights they were made of ("a.weight+b.weight+c.weight"; diff reads it).
        string origins = string.Join("+", set.Select(p => ctx.Provenance.SourceOf(p.MatMul.Inputs[1]!.Name)));
        ctx.Provenance.Record(weight.Name, origins);
        if (weight.Producer is { } wdq) ctx.Provenance.Record(wdq.Inputs[0]!.Name, origins);
        var mm = e.Node("MatMul", "", set[0].MatMul.Inputs[0], weight);
        // Per-token dynamic layers (lower_qdq) multiply every MatMul's result by the same row scale: one Mul on the
        // packed result instead, before the Split.
        var rowScale = CommonRowScale(set);
        var packed = rowScale is null ? mm.Output
            : e.Op("Mul", "/act_dyn_rescale", mm.Output, rowScale);
        var sizes = e.Int64s("/split_sizes", set.Select(p => p.N).ToArray());
        var split = e.NodeOf("Split", "/split", [packed, sizes], outputCount: set.Count);
        split.SetAttribute("axis", -1L);
        for (int i = 0; i < set.Count; i++)
        {
            if (rowScale is not null)
            {
                var rescale = set[i].MatMul.Output.Uses[0].Node;
                g.ReplaceValue(rescale.Output, split.Outputs[i]!);
                g.RemoveNode(rescale);
            }
            else g.ReplaceValue(set[i].MatMul.Output, split.Outputs[i]!);
            g.RemoveNode(set[i].MatMul);
        }
        ctx.Log.Add($"fuse_projections: {string.Join(", ", set.Select(p => p.Layer))} → {mm.Name} (N " +
            $"= {string.Join(" + ", set.Select(p => p.N))})");
    }

    /// <summary>The row scale s when every projection's result is read only by a Mul(result, s) with the same s, else null.</summary>
    private static Value? CommonRowScale(List<Projection> set)
    {
        Value? s = null;
        foreach (var p in set)
        {
            var y = p.MatMul.Output;
            if (y.IsGraphOutput || y.Uses.Count != 1 || y.Uses[0].InputIndex != 0 || !y.Uses[0].Node.Is("Mul") ||
                y.Uses[0].Node.Inputs.Count != 2) return null;
            var si = y.Uses[0].Node.Inputs[1];
            if (si is null || (s is not null && !ReferenceEquals(si, s))) return null;
            s = si;
        }
        return s;
    }

    /// <summary>After lowering the weight is a DequantizeLinear's output: the layer is named after the float weight it stands
    /// for.</summary>
    private static string? LayerFromWeight(PassContext ctx, Node mm) => LayerOf(ctx, mm.Inputs[1]);

    /// <summary>The layer a compiled weight stands for (its float weight's name less ".weight"), or null when it has no origin.</summary>
    private static string? LayerOf(PassContext ctx, Value? weight)
    {
        if (weight is null) return null;
        string origin = ctx.Provenance.OriginOf(weight.Name);
        if (origin == weight.Name) return null;
        return origin.EndsWith(".weight", StringComparison.Ordinal) ? origin[..^".weight".Length] : origin;
    }

    /// <summary>"model.layers.0.self_attn.q_proj", "….k_proj", "….v_proj" → "model.layers.0.self_attn.q_proj+k_proj+v_proj".</summary>
    private static string PackedName(List<string> names)
    {
        int cut = names[0].LastIndexOf('.') + 1;
        string prefix = names[0][..cut];
        return names.All(s => s.StartsWith(prefix, StringComparison.Ordinal)) && cut > 0
            ? prefix + string.Join("+", names.Select(s => s[cut..]))
            : string.Join("+", names);
    }

    private static int IndexOf(Graph g, Node n)
    {
        for (int i = 0; i < g.Nodes.Count; i++) if (ReferenceEquals(g.Nodes[i], n)) return i;
        return -1;
    }

    /// <summary>Tensors of the same type concatenated along their last axis (1-D: end to end; sub-byte types repacked).</summary>
    private static Value ConcatTensor(Graph g, string name, List<Tensor> parts)
    {
        int type = parts[0].DataType;
        if (parts.Any(p => p.DataType != type || p.Dims.Length != parts[0].Dims.Length))
            throw new InvalidOperationException($"{name}: parts of different types or ranks");
        long rows = parts[0].Dims.Length == 2 ? parts[0].Dims[0] : 1;
        if (parts.Any(p => (p.Dims.Length == 2 ? p.Dims[0] : 1) != rows))
            throw new InvalidOperationException($"{name}: parts with different row counts");
        var cols = parts.Select(p => p.Dims[^1]).ToList();
        long total = cols.Sum();
        long[] dims = parts[0].Dims.Length == 2 ? [rows, total] : [total];
        int bits = Quantc.Onnx.DataTypes.BitsOf(type);
        if (bits == 4)
        {
            var packed = new byte[(rows * total + 1) / 2];
            long at = 0;
            // Even row lengths: every part's row is whole bytes at a whole-byte offset of the packed row (copied as bytes).
            bool bytewise = cols.All(c => c % 2 == 0);
            for (int p = 0; p < parts.Count; p++)
            {
                var src = parts[p].Data.Span;
                if (bytewise)
                    for (long i = 0; i < rows; i++)
                        src.Slice((int)(i * cols[p] / 2), (int)(cols[p] / 2)).CopyTo(packed.AsSpan((int)((i * total + at) / 2)));
                else
                    for (long i = 0; i < rows; i++)
                        for (long c = 0; c < cols[p]; c++)
                        {
                            long s = i * cols[p] + c, d = i * total + at + c;
                            Nibbles.Put(packed, d, Nibbles.Get(src, s));
                        }
                at += cols[p];
            }
            return g.AddInitializer(Tensor.FromBytes(g.UniqueName(name), type, dims, packed));
        }
        if (bits % 8 != 0) throw new InvalidOperationException($"{name}: {bits}-bit elements are not concatenated");
        int size = bits / 8;
        var bytes = new byte[rows * total * size];
        long off = 0;
        for (int p = 0; p < parts.Count; p++)
        {
            var src = parts[p].Data.Span;
            for (long i = 0; i < rows; i++)
                src.Slice((int)(i * cols[p] * size), (int)(cols[p] * size)).CopyTo(bytes.AsSpan((int)((i * total + off) * size)));
            off += cols[p];
        }
        return g.AddInitializer(Tensor.FromBytes(g.UniqueName(name), type, dims, bytes));
    }
}

/// <summary>fuse_projections' options.</summary>
public sealed record FuseProjectionsOptions : PassOptions
{
    [Option("a fused gate/up ai.quantc.MatMulInt4Int8 (float32 activations) whose outputs feed silu(gate) · up takes the SwiGLU " +
        "inside, as ai.quantc.SwiGluMatMulInt4Int8 (the Split, Sigmoid and two Muls leave the graph); false keeps them")]
    public bool Swiglu { get; init; } = true;
}
