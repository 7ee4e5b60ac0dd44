using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// LowerMatMulNBits: emits com.microsoft <c>MatMulNBits</c> directly for every MatMul layer planned as
/// int4 weights blocked along K with float activations, instead of the DequantizeLinear(block_size) →
/// MatMul form that ONNX Runtime fuses into the same operator. Packing, as the operator defines it:
/// B is uint8 [N, K / block, block / 2], element k of a block in the low nibble when k is even, stored as
/// the unsigned value q + 8 of our signed int4 weight; scales are float [N · K / block], output channel
/// major; zero points are omitted for symmetric weights (the operator's default is 8) and given as
/// z + 8 packed two per byte, [N · ⌈blocks / 2⌉], for asymmetric ones. <c>accuracy_level</c> is passed
/// through (0: float compute; 4: ONNX Runtime quantizes the activation to int8 per block and runs an
/// integer kernel). Run it before lower_qdq, which then lowers the remaining layers.
/// </summary>
public sealed class LowerMatMulNBitsPass(long accuracyLevel) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<LowerMatMulNBitsOptions>("lower_matmulnbits", PassKind.Lowering,
        "emit com.microsoft MatMulNBits for int4 blocked weight-only layers; run before lower_qdq",
        o => new LowerMatMulNBitsPass(o.AccuracyLevel))
        with { Contract = PassContract.Lowers };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        if ((ctx.Model.OpsetVersion("com.microsoft") ?? 0) < 1) ctx.Model.SetOpset("com.microsoft", 1);
        int lowered = 0;
        foreach (var l in ctx.Map.Linears)
        {
            if (!ctx.Plan.TryGet(l.Name, out var plan) || plan.WeightFormat != NumberFormat.Int4 ||
                plan.ActivationFormat != NumberFormat.Fp32 || plan.QuantizedWeight is not { } q) continue;
            if (!l.Node.Is("MatMul")) { ctx.Log.Add($"lower_matmulnbits: {l.Name} left to lower_qdq: not a MatMul"); continue; }
            int k = (int)l.InFeatures, n = (int)l.OutFeatures, block = q.GroupSize;
            if (block < 16 || (block & (block - 1)) != 0)
                { ctx.Log.Add($"lower_matmulnbits: {l.Name} left to lower_qdq: block size {block} is not a power of two ≥ 16"); continue; }
            int blocks = k / block, blob = block / 2;
            var packed = new byte[n * blocks * blob];
            var qv = q.Values;
            for (int c = 0; c < n; c++)
                for (int j = 0; j < k; j++)
                {
                    Nibbles.Put(packed, (long)c * blocks * block + j, qv[c * k + j] + 8);
                }
            var b = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_q4", (int)DT.Uint8, [n, blocks, blob], packed));
            var scales = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_q4_scales", [n * blocks], q.Scales));
            Value? zp = null;
            if (q.ZeroPoints is { } z)
            {
                int zpBytes = (blocks + 1) / 2;
                var zpPacked = new byte[n * zpBytes];
                for (int c = 0; c < n; c++)
                    for (int bi = 0; bi < blocks; bi++)
                        Nibbles.Put(zpPacked, 2L * c * zpBytes + bi, z[c * blocks + bi] + 8);
                zp = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_q4_zero_points", (int)DT.Uint8, [n * zpBytes], zpPacked));
            }
            var old = l.Node.Output;
            string outName = old.Name;
            g.RenameValueUnique(old, outName + "_dense");
            var node = new Emitter(g, l.Node, l.Name).NodeOf("MatMulNBits", "/MatMulNBits",
                zp is null ? [l.Input, b, scales] : [l.Input, b, scales, zp], "com.microsoft", outputNames: [outName]);
            node.SetAttribute("K", (long)k);
            node.SetAttribute("N", (long)n);
            node.SetAttribute("bits", 4L);
            node.SetAttribute("block_size", (long)block);
            node.SetAttribute("accuracy_level", accuracyLevel);
            g.ReplaceAllUses(old, node.Output, includeGraphOutputs: true);
            g.RemoveNode(l.Node);
            ctx.Provenance.Record(b.Name, l.Weight.Name);
            plan.QuantizedWeight = null; // lowered: lower_qdq leaves this layer alone
            plan.LoweredBy = Info.Name;
            plan.Reasons.Add($"lowered to com.microsoft.MatMulNBits (block {block}, accuracy_level {accuracyLevel})");
            lowered++;
        }
        ctx.Log.Add($"lower_matmulnbits: {lowered} layers as MatMulNBits");
        g.RemoveDeadCode();
    }
}

/// <summary>The options of <see cref="LowerMatMulNBitsPass"/>.</summary>
public sealed record LowerMatMulNBitsOptions : PassOptions
{
    [Option("MatMulNBits' accuracy_level: the lowest precision of its activations (0: unset, 1: fp32, 2: fp16, 3: bf16, 4: int8)", Min = 0,
        Max = 4)]
    public int AccuracyLevel { get; init; }
}
