using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Verification;

/// <summary>
/// A float32 model rewritten to compute in float64 (initializers, constants, casts and intermediate types; float inputs
/// cast on entry, float outputs cast back on exit), so ONNX Runtime evaluates its function exactly enough to tell a
/// rewrite's change of function from float32 arithmetic noise (<c>quantc verify --exact</c>). Standard ONNX ops
/// without subgraphs only: contrib and ai.quantc kernels are float32, which is a <see cref="BadInputException"/>.
/// Holds the weights as float64: twice the float32 model's memory.
/// </summary>
public static class Float64Model
{
    /// <summary>Rewrites <paramref name="m"/> in place.</summary>
    public static void Convert(Model m)
    {
        var g = m.Graph;
        if (g.Nodes.FirstOrDefault(n => !n.IsOnnxDomain) is { } custom)
            throw new BadInputException($"exact reference: {custom.Domain}.{custom.OpType} '{custom.Name}' has no float64 kernel in ONNX " +
                $"Runtime (the float64 evaluation needs standard ONNX ops)");
        if (g.Nodes.FirstOrDefault(n => n.Subgraphs.Any()) is { } flow)
            throw new BadInputException($"exact reference: {flow.OpType} '{flow.Name}' has a subgraph, which the float64 evaluation does " +
                $"not convert");
        const int F = (int)TensorProto.Types.DataType.Float, D = (int)TensorProto.Types.DataType.Double;
        foreach (var v in g.Initializers.ToList())
            if (v.Initializer!.DataType == F)
            {
                var f = v.Initializer.ToFloat32();
                g.SetInitializer(v, Tensor.FromValues<double>(v.Name, D, v.Initializer.Dims, f.Select(x => (double)x).ToArray()));
            }
        foreach (var n in g.Nodes.ToList())
        {
            if (n.OpType == "Cast" && n.GetInt("to", 0) == F) n.SetAttribute("to", (long)D);
            if (n.OpType is "ConstantOfShape" or "Constant" && n.GetTensor("value") is { DataType: F } t)
            {
                var vals = t.ToFloat32().Select(x => (double)x).ToArray();
                var tp = Tensor.FromValues<double>("value", D, t.Dims, vals).ToProto("value", out _);
                n.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tp });
            }
        }
        foreach (var v in g.Values.ToList())
            if (!v.IsGraphInput && !v.IsGraphOutput && !v.IsInitializer && v.Type?.TensorType is { ElemType: F })
                { var c = v.Type!.Clone(); c.TensorType.ElemType = D; v.Type = c; }
        foreach (var x in g.Inputs.ToList())
            if (x.Type?.TensorType is { ElemType: F })
            {
                var cast = g.AddNode("Cast", [x], before: g.Nodes[0]);
                cast.SetAttribute("to", (long)D);
                g.ReplaceAllUses(x, cast.Output, except: cast);
            }
        for (int i = 0; i < g.Outputs.Count; i++)
        {
            var o = g.Outputs[i];
            if (o.Type?.TensorType is not { ElemType: F }) continue;
            var cast = g.AddNode("Cast", [o]);
            cast.SetAttribute("to", (long)F);
            var t = o.Type;
            var uses = o.Uses.ToList();
            g.ReplaceValue(o, cast.Output);
            foreach (var u in uses) u.Node.SetInput(u.InputIndex, o);
            var c = t.Clone(); c.TensorType.ElemType = D; o.Type = c;
            cast.Output.Type = t;
        }
    }
}
