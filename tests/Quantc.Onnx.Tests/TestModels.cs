using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx.Tests;

/// <summary>Models built with the IR's editing API, shared by the writer and reader tests.</summary>
internal static class TestModels
{
    public static TypeProto T(int elem, params long[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims) s.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elem, Shape = s } };
    }

    public static readonly long[] XShape = [3, 64];

    /// <summary>
    /// MatMul → Add → Relu → Gemm(transB) → Reshape (shape from a Constant node) → Conv → a Loop whose
    /// body captures two outer values (the Conv output and an initializer) → an If whose branches
    /// capture the Loop's output.
    /// </summary>
    public static Model Build()
    {
        var m = Model.Create(opset: 21);
        var g = m.Graph;
        var rng = new Random(9);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var x = g.AddInput("x", T(1, XShape));
        var flag = g.AddInput("flag", T(9));
        var mm = g.AddNode("MatMul", [x, g.AddInitializer(Tensor.FromFloats("w1", [64, 512], R(64 * 512)))]);   // 128 KiB: external with a small threshold
        var add = g.AddNode("Add", [mm.Output, g.AddInitializer(Tensor.FromFloats("b1", [512], R(512)))]);
        var relu = g.AddNode("Relu", [add.Output]);
        var gemm = g.AddNode("Gemm", [relu.Output, g.AddInitializer(Tensor.FromFloats("w2", [48, 512], R(48 * 512))), g.AddInitializer(Tensor.FromFloats("b2", [48], R(48)))]);
        gemm.SetAttribute("transB", 1L);
        var shapeConst = g.AddNode("Constant", [], outputNames: ["shape"]);
        shapeConst.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = ConstTensor([1, 3, 6, 8]) });
        var reshaped = g.AddNode("Reshape", [gemm.Output, shapeConst.Output]);                                       // [1, 3, 6, 8]
        var conv = g.AddNode("Conv", [reshaped.Output, g.AddInitializer(Tensor.FromFloats("cw", [4, 3, 3, 3], R(4 * 27))), g.AddInitializer(Tensor.FromFloats("cb", [4], R(4)))]);
        conv.SetAttribute("pads", [1L, 1, 1, 1]);                                                                     // [1, 4, 6, 8]
        var trips = g.AddInitializer(Tensor.FromValues<long>("trips", 7, [], [3L]));
        var half = g.AddInitializer(Tensor.FromFloats("half", [], [0.5f]));
        var loop = g.AddNode("Loop", [trips, null, conv.Output], outputNames: ["loop_out"]);
        var body = loop.SetSubgraph("body", "loop_body");
        body.AddInput("iter", T(7));
        var condIn = body.AddInput("cond_in", T(9));
        var vIn = body.AddInput("v_in", T(1, 1, 4, 6, 8));
        var condOut = body.AddNode("Identity", [condIn], outputNames: ["cond_out"]);
        var scaled = body.AddNode("Mul", [vIn, half]);                                     // captures an outer initializer
        var vOut = body.AddNode("Add", [scaled.Output, conv.Output], outputNames: ["v_out"]); // captures an outer node output
        body.AddOutput(condOut.Output);
        body.AddOutput(vOut.Output);
        var iff = g.AddNode("If", [flag], outputNames: ["y"]);
        foreach (var (branch, op) in new[] { ("then_branch", "Neg"), ("else_branch", "Abs") })
        {
            var b = iff.SetSubgraph(branch, branch);
            var o = b.AddNode(op, [loop.Output], outputNames: [branch + "_out"]); // captures the Loop's output
            b.AddOutput(o.Output);
        }
        g.AddOutput(iff.Output);
        m.SetMetadata("purpose", "writer test");
        m.DocString = "a model with a doc string";
        g.Validate();
        return m;
    }

    private static TensorProto ConstTensor(long[] values)
    {
        var t = new TensorProto { DataType = 7 };
        t.Dims.Add(values.Length);
        t.Int64Data.Add(values);
        return t;
    }
}
