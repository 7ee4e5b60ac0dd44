using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// Dynamic (run-time) activation quantization of a Conv, as ONNX Runtime's integer kernel takes it: DynamicQuantizeLinear(x)
/// → (x_q uint8, s_x, z_x) per tensor; ConvInteger(x_q, W_u8, z_x, 128) → int32; Cast → float; · (s_x · s_w[c]) per output
/// channel; + bias. The int8 symmetric per-channel weights are stored as uint8 (q + 128, one zero point 128: ONNX Runtime's
/// ConvInteger takes uint8 weights with a per-tensor zero point). A ConvTranspose has no integer counterpart and keeps
/// int8 weights only.
/// </summary>
internal static class ConvDynamic
{
    /// <summary>True when layer <paramref name="l"/> with <paramref name="plan"/> is lowered to ConvInteger.</summary>
    public static bool Applies(LinearLayer l, LayerPlan plan) => l.Conv is { Transposed: false }
        && plan.ActivationMode == ActivationMode.Dynamic && plan.ActivationFormat == NumberFormat.UInt8
        && plan.WeightFormat.IsInt8Storage && plan.QuantizedWeight is { GroupSize: 0 };

    /// <summary>Replaces the Conv of <paramref name="l"/> by the ConvInteger form above.</summary>
    public static void Lower(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan)
    {
        var q = plan.QuantizedWeight!;
        var conv = l.Node;
        var dims = l.Conv!.WeightDims;
        int n = (int)l.OutFeatures;
        var qv = q.Values;   // a copy per read (it may be spilled): taken once
        var wu = new byte[qv.Length];
        for (int i = 0; i < wu.Length; i++) wu[i] = (byte)(qv[i] + 128);
        var w = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_uint8", (int)DT.Uint8, dims, wu));
        ctx.Provenance.Record(w.Name, l.Weight.Name);
        var e = new Emitter(g, conv, l.Name + "/dynamic");
        var dql = e.NodeOf("DynamicQuantizeLinear", "_x_quantize", [conv.Inputs[0]], outputCount: 3);
        var ci = e.Node("ConvInteger", "_conv", dql.Outputs[0], w, dql.Outputs[2], e.UInt8("_w_zero_point", 128));
        foreach (var a in conv.Attributes) ci.SetAttribute(a.Proto.Clone());
        var cast = e.Node("Cast", "_cast", ci.Output);
        cast.SetAttribute("to", 1L);
        // Per output channel, broadcast over [batch, channels, spatial…].
        long[] channelShape = [1, n, .. Enumerable.Repeat(1L, dims.Length - 2)];
        var ws = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Weight.Name + "_scale"), channelShape, q.Scales));
        var scale = e.Op("Mul", "_scale", dql.Outputs[1], ws);
        var y = e.Op("Mul", "_rescale", cast.Output, scale);
        if (l.Bias is { Initializer: { } bt } b)
        {
            var bias = g.AddInitializer(Tensor.FromFloats(g.UniqueName(b.Name + "_channels"), channelShape, bt.ToFloat32()));
            y = e.Op("Add", "_bias", y, bias);
        }
        g.ReplaceValue(l.Output, y);
        plan.Reasons.Add("lower_qdq: DynamicQuantizeLinear (uint8 per tensor) → ConvInteger (weights uint8 = int8 + 128) → Cast → " +
            "· s_x·s_w per channel (+ bias)");
        plan.LoweredBy ??= LowerQdqPass.Info.Name;
    }
}
