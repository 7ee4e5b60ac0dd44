using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// fuse_projections' part for <c>ai.quantc.MatMulInt4Int8</c> and <c>HadamardMatMulInt4Int8</c> (lower_w4a8's layers): the ones
/// of one op type that read the same A — q/k/v, gate/up — become one on their int4 weights and scales stacked along N (B [N, K/2]
/// and B_scale [N, K/G] are row-major per output channel, so stacking is appending rows), then a Split. They must agree on
/// group_size, K, normalize and the A_scale value, have no bias input, and own their constant weight and scale. Exact: every
/// output column is computed from the same numbers (with a float A the per-token quantization is of the same rows), and the
/// op's column tiles are independent.
/// </summary>
public sealed partial class FuseProjectionsPass
{
    private sealed record Int4Int8Projection(Node Node, string Layer, Tensor B, Tensor Scale, float AScale)
    {
        // hadamard / hadamard_normalize: MatMulInt4Int8's attributes from before HadamardMatMulInt4Int8 (an older compiled graph)
        public (string Op, long Group, long Half, long Groups, float AScale, long Normalize, long Hadamard, long HadamardNormalize) Key =>
            (Node.OpType, Node.GetInt("group_size", 32), B.Dims[1], Scale.Dims[1], AScale, Node.GetInt("normalize", 1),
                Node.GetInt("hadamard", 0), Node.GetInt("hadamard_normalize", 1));
    }

    /// <summary>Fuses every set of MatMulInt4Int8 (or HadamardMatMulInt4Int8) that read one A; returns (sets, nodes fused).</summary>
    private static (int Groups, int Fused) FuseInt4Int8(PassContext ctx, Graph g, Dictionary<Node, string> layerOf, bool swiglu)
    {
        int groups = 0, fused = 0;
        var byInput = g.Nodes.Where(n => n.OpType is "MatMulInt4Int8" or LowerW4A8Pass.HadamardOp && n.Domain == CustomOps.Domain &&
                n.Inputs[0] is not null)
            .GroupBy(n => n.Inputs[0]!, (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance).Where(x => x.Count() > 1).ToList();
        foreach (var readers in byInput)
        {
            var projections = new List<Int4Int8Projection>();
            foreach (var mm in readers)
            {
                string layer = layerOf.GetValueOrDefault(mm) ?? LayerOf(ctx, mm.Inputs.ElementAtOrDefault(2)) ?? mm.Name;
                if (DescribeInt4Int8(mm, layer, out string? why) is { } p) projections.Add(p);
                else ctx.Log.Add($"fuse_projections: {layer} ({mm.OpType}) stays on its own: {why}");
            }
            foreach (var set in projections.GroupBy(p => p.Key).Where(s => s.Count() > 1))
            {
                var (mm, split) = FuseInt4Int8Set(ctx, g, set.ToList());
                if (set.Count() == 2 && mm.OpType == "MatMulInt4Int8") FuseSwiGlu(ctx, g, set.ToList(), mm, split, swiglu);
                groups++;
                fused += set.Count();
            }
        }
        return (groups, fused);
    }

    private static Int4Int8Projection? DescribeInt4Int8(Node mm, string layer, out string? why)
    {
        why = null;
        if (mm.Inputs.Count > 4 && mm.Inputs[4] is not null) { why = "it has a bias input"; return null; }
        if (mm.Inputs.Count < 4 || mm.Inputs[1]?.Initializer is not { } a || a.DataType != (int)DT.Float || a.ElementCount != 1)
        {
            why = "its A_scale is not a float32 scalar constant";
            return null;
        }
        var b = mm.Inputs[2]!;
        var s = mm.Inputs[3]!;
        if (b.Initializer is not { Dims.Length: 2 } bt || bt.DataType != (int)DT.Uint8 ||
            s.Initializer is not { Dims.Length: 2 } st || st.DataType != (int)DT.Float || st.Dims[0] != bt.Dims[0])
        {
            why = "its weight or scale is not a constant uint8 [N, K/2] / float32 [N, K/G] pair";
            return null;
        }
        if (b.Uses.Count != 1 || s.Uses.Count != 1 || b.IsGraphOutput || s.IsGraphOutput)
        {
            why = $"its weight '{b.Name}' or scale '{s.Name}' is also read elsewhere";
            return null;
        }
        return new Int4Int8Projection(mm, layer, bt, st, a.ToFloat32()[0]);
    }

    private static (Node MatMul, Node Split) FuseInt4Int8Set(PassContext ctx, Graph g, List<Int4Int8Projection> set)
    {
        string name = PackedName(set.Select(p => p.Layer).ToList());
        var first = set.Select(p => p.Node).OrderBy(m => IndexOf(g, m)).First();
        var e = new Emitter(g, first, name);
        long n = set.Sum(p => p.B.Dims[0]);
        var b = g.AddInitializer(Tensor.FromBytes(g.UniqueName(name + ".weight_int4"), (int)DT.Uint8, [n, set[0].B.Dims[1]],
            Stacked(set, p => p.B)));
        var s = g.AddInitializer(Tensor.FromBytes(g.UniqueName(name + ".weight_scale"), (int)DT.Float, [n, set[0].Scale.Dims[1]],
            Stacked(set, p => p.Scale)));
        string origins = string.Join("+", set.Select(p => ctx.Provenance.SourceOf(p.Node.Inputs[2]!.Name)));
        ctx.Provenance.Record(b.Name, origins);
        string op = set[0].Node.OpType;
        var mm = e.NodeOf(op, "/" + op, [set[0].Node.Inputs[0], set[0].Node.Inputs[1], b, s], CustomOps.Domain);
        mm.CopyAttributes(set[0].Node);
        var sizes = e.Int64s("/split_sizes", set.Select(p => p.B.Dims[0]).ToArray());
        var split = e.NodeOf("Split", "/split", [mm.Output, sizes], outputCount: set.Count);
        split.SetAttribute("axis", -1L);
        for (int i = 0; i < set.Count; i++)
        {
            g.ReplaceValue(set[i].Node.Output, split.Outputs[i]!);
            g.RemoveNode(set[i].Node);
        }
        ctx.Log.Add($"fuse_projections: {string.Join(", ", set.Select(p => p.Layer))} → {mm.Name} ({op}, N " +
            $"= {string.Join(" + ", set.Select(p => p.B.Dims[0]))})");
        return (mm, split);
    }

    /// <summary>
    /// A fused pair whose outputs feed silu(gate) · up — Sigmoid(g), Mul(g, sigmoid) and Mul(that, u), in either operand order, each
    /// read only there — becomes one ai.quantc.SwiGluMatMulInt4Int8 (its gate attribute: which half of the stacked rows is the
    /// gate's) whose output takes over the last Mul's; the Split, Sigmoid and Muls are left dead. Needs equal halves and a
    /// float32 A (the op quantizes it per token itself). Otherwise, or with swiglu: false, the pair keeps its Split; the log
    /// says why.
    /// </summary>
    private static void FuseSwiGlu(PassContext ctx, Graph g, List<Int4Int8Projection> set, Node mm, Node split, bool enabled)
    {
        string pair = string.Join(" + ", set.Select(p => p.Layer));
        string? why = !enabled ? "swiglu: false"
            : mm.Inputs[0] is not { ElementType: 0 or (int)DT.Float } a || a.Producer?.Is("QuantizeLinear") == true
                ? "its activations are quantized by the graph, not inside the op"
            : set[0].B.Dims[0] != set[1].B.Dims[0] ? $"its halves differ in size ({set[0].B.Dims[0]} and {set[1].B.Dims[0]})"
            : null;
        (int Gate, Node Last)? found = why is null ? SwiGluOf(split) : null;
        if (why is null && found is null) why = "its outputs do not feed silu(gate) · up alone (Sigmoid, Mul, Mul)";
        if (why is not null)
        {
            ctx.Log.Add($"fuse_projections: {pair} keeps its Split: {why}");
            return;
        }
        var (gate, last) = found!.Value;
        var e = new Emitter(g, mm, mm.Name.Replace("/MatMulInt4Int8", "", StringComparison.Ordinal));
        var fused = e.NodeOf(SwiGluOp, "/" + SwiGluOp, [mm.Inputs[0], mm.Inputs[1], mm.Inputs[2], mm.Inputs[3]], CustomOps.Domain);
        fused.CopyAttributes(mm);
        fused.SetAttribute("gate", (long)gate);
        g.ReplaceValue(last.Output, fused.Output);
        ctx.Log.Add($"fuse_projections: {pair} → {fused.Name} (ai.quantc.{SwiGluOp}: the Split, Sigmoid and two Muls inside, gate = " +
            $"{(gate == 0 ? "first" : "second")} half)");
    }

    /// <summary>The op type of a fused gate/up MatMulInt4Int8 with its SwiGLU inside.</summary>
    public const string SwiGluOp = "SwiGluMatMulInt4Int8";

    /// <summary>(which Split output is the gate, the final Mul) when the two outputs feed exactly silu(gate) · up; else null.</summary>
    private static (int Gate, Node Last)? SwiGluOf(Node split)
    {
        if (split.Outputs.Count != 2) return null;
        for (int gate = 0; gate < 2; gate++)
        {
            Value gv = split.Outputs[gate]!, uv = split.Outputs[1 - gate]!;
            if (gv.IsGraphOutput || uv.IsGraphOutput || gv.Uses.Count != 2 || !uv.IsSingleUse) continue;
            var sigmoid = gv.Uses.Select(u => u.Node).FirstOrDefault(n => n.Is("Sigmoid"));
            var mul = gv.Uses.Select(u => u.Node).FirstOrDefault(n => n.Is("Mul"));
            if (sigmoid is null || mul is null || !sigmoid.Output.IsSingleUse || sigmoid.Output.Uses[0].Node != mul) continue;
            if (!ReadsBoth(mul, gv, sigmoid.Output) || !mul.Output.IsSingleUse) continue;
            var last = mul.Output.Uses[0].Node;
            if (!last.Is("Mul") || uv.Uses[0].Node != last || !ReadsBoth(last, mul.Output, uv)) continue;
            return (gate, last);
        }
        return null;
    }

    private static bool ReadsBoth(Node mul, Value a, Value b) => mul.Inputs.Count == 2 &&
        (ReferenceEquals(mul.Inputs[0], a) && ReferenceEquals(mul.Inputs[1], b) ||
         ReferenceEquals(mul.Inputs[0], b) && ReferenceEquals(mul.Inputs[1], a));

    /// <summary>Row-major tensors with the same row length stacked along their first axis: their bytes end to end.</summary>
    private static byte[] Stacked(List<Int4Int8Projection> set, Func<Int4Int8Projection, Tensor> part)
    {
        var bytes = new byte[checked((int)set.Sum(p => part(p).Data.Length))];
        int at = 0;
        foreach (var p in set)
        {
            var data = part(p).Data.Span;
            data.CopyTo(bytes.AsSpan(at));
            at += data.Length;
        }
        return bytes;
    }
}
