using Quantc.Ir.Analysis;
using Quantc.Onnx.Proto;
using static Quantc.Ir.Tests.TestGraphs;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Tests;

/// <summary>Linear layer recognition: MatMul (+ bias Add in either order), Gemm with transB, and the near misses with their reasons.</summary>
public class LinearPatternTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MatMulWithBiasAddInEitherOrder(bool biasFirst)
    {
        var (m, mm, add) = MatMulBias(biasFirst);
        using (m)
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            var l = Assert.Single(map.Linears);
            Assert.Equal("fc", l.Name);
            Assert.Same(mm, l.Node);
            Assert.Same(add, l.BiasAdd);
            Assert.Equal("fc.bias", l.Bias!.Name);
            Assert.Same(add.Output, l.Output);
            Assert.Equal("MatMul+Add", l.Form);
            Assert.Equal([mm, add], l.Nodes);
            Assert.Equal((Hidden, 4L), (l.InFeatures, l.OutFeatures));
            Assert.False(l.WeightIsOutByIn);
            Assert.Empty(map.Refusals);
        }
    }

    [Theory]
    [InlineData(new long[] { 1, 4 }, true)]
    [InlineData(new long[] { 1, 1, 4 }, true)]
    [InlineData(new long[] { 2, 4 }, false)]
    [InlineData(new long[] { 5 }, false)]
    public void BiasShapesThatBroadcastLikeAVectorAreBiases(long[] dims, bool isBias)
    {
        var (m, _, add) = MatMulBias(false, dims);
        using (m)
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            var l = Assert.Single(map.Linears);
            Assert.Equal(isBias, l.Bias is not null);
            if (!isBias)
            {
                var r = Assert.Single(map.Refusals);
                Assert.Same(add, r.Node);
                Assert.Equal($"not taken as the bias of MatMul '/fc/MatMul': bias 'fc.bias' has shape {Patterns.Constants.ShapeText(dims)}, not [4]", r.Reason);
            }
        }
    }

    [Fact]
    public void AResidualAddIsNotABiasAndNeedsNoExplanation()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var y = Linear(g, x, "/fc", "fc.weight", Hidden, Hidden, 1);
        g.AddOutput(g.AddNode("Add", [x, y]).Output);
        var map = LayerAnalysis.Analyze(g);
        Assert.Null(Assert.Single(map.Linears).BiasAdd);
        Assert.Empty(map.Refusals);
    }

    [Fact]
    public void MatMulWithANonInitializerWeightIsRefusedWithAReason()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var w = g.AddInput("w", F32(Hidden, 4));
        g.AddOutput(g.AddNode("MatMul", [x, w], name: "mm").Output);
        var map = LayerAnalysis.Analyze(g);
        Assert.Empty(map.Linears);
        Assert.Equal("MatMul 'mm': second input 'w' is a graph input, not an initializer", Assert.Single(map.Refusals).ToString());
    }

    [Fact]
    public void WeightsThatAreNotPlainInitializersAreRefusedWithTheirReason()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var constant = g.AddNode("Constant", [], name: "c", outputNames: ["c_out"]);
        constant.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = new TensorProto { DataType = 1, Dims = { Hidden, 4 }, FloatData = { new float[Hidden * 4] } } });
        var transposed = g.AddNode("Transpose", [Init(g, "wt", [4, Hidden], 1)], name: "t");
        var w3 = Init(g, "w3", [1, Hidden, 4], 2);
        var w8 = g.AddInitializer(Tensor.FromValues<sbyte>("w8", (int)DT.Int8, [Hidden, 4], new sbyte[Hidden * 4]));
        var wrongK = Init(g, "wk", [6, 4], 3);
        foreach (var (w, name) in new[] { (constant.Output, "mm_const"), (transposed.Output, "mm_t"), (w3, "mm_3d"), (w8, "mm_int8"), (wrongK, "mm_k") })
            g.AddOutput(g.AddNode("MatMul", [x, w], name: name).Output);
        var map = LayerAnalysis.Analyze(g);
        // A 2-D initializer read through a Transpose is a layer whose weight is stored [out, in] (a head tied to the embedding).
        var t = Assert.Single(map.Linears);
        Assert.Equal(("Transpose+MatMul", "wt", true), (t.Form, t.Weight.Name, t.WeightIsOutByIn));
        Assert.Equal(
        [
            "MatMul 'mm_const': weight 'c_out' is the output of a Constant node, not an initializer",
            "MatMul 'mm_3d': weight 'w3' has shape [1, 8, 4], not 2-D",
            "MatMul 'mm_int8': weight 'w8' is int8, not floating point",
            "MatMul 'mm_k': input 'x' has 8 features but weight 'wk' expects 6",
        ], map.Refusals.Select(r => r.ToString()));
    }

    [Fact]
    public void ActivationTimesActivationIsNotALayerAndNotANearMiss()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var q = g.AddInput("q", F32(2, 4, 8));
        var k = g.AddInput("k", F32(2, 4, 8));
        var kt = g.AddNode("Transpose", [k]);
        kt.SetAttribute("perm", [0L, 2, 1]);
        g.AddOutput(g.AddNode("MatMul", [q, kt.Output]).Output);
        var map = LayerAnalysis.Analyze(g);
        Assert.Empty(map.Linears);
        Assert.Empty(map.Refusals);
    }

    private static (Model Model, Node Gemm) GemmGraph(long transB, float alpha = 1f, long transA = 0, long[]? cDims = null)
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var w = Init(g, "fc.weight", transB == 1 ? [4, Hidden] : [Hidden, 4], 1);
        var gemm = g.AddNode("Gemm", [x, w, Init(g, "fc.bias", cDims ?? [4], 2)], name: "/fc/Gemm");
        gemm.SetAttribute("transB", transB);
        if (transA != 0) gemm.SetAttribute("transA", transA);
        if (alpha != 1f) gemm.SetAttribute("alpha", alpha);
        g.AddOutput(gemm.Output);
        return (m, gemm);
    }

    [Theory]
    [InlineData(1L)]
    [InlineData(0L)]
    public void GemmWithOrWithoutTransBIsALinearLayer(long transB)
    {
        var (m, gemm) = GemmGraph(transB);
        using (m)
        {
            var l = Assert.Single(LayerAnalysis.Analyze(m.Graph).Linears);
            Assert.Equal("fc", l.Name);
            Assert.Same(gemm, l.Node);
            Assert.Equal(transB == 1, l.WeightIsOutByIn);
            Assert.Equal((Hidden, 4L), (l.InFeatures, l.OutFeatures));
            Assert.Equal("fc.bias", l.Bias!.Name);
            Assert.Null(l.BiasAdd);
            Assert.Equal("Gemm", l.Form);
        }
    }

    [Theory]
    [InlineData(2f, 0L, null, "alpha = 2 (only 1 is handled)")]
    [InlineData(1f, 1L, null, "transA = 1 is not handled")]
    [InlineData(1f, 0L, new long[] { 3 }, "bias 'fc.bias' has shape [3], not [4]")]
    public void GemmNearMisses(float alpha, long transA, long[]? cDims, string reason)
    {
        var (m, _) = GemmGraph(1, alpha, transA, cDims);
        using (m)
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            Assert.Empty(map.Linears);
            Assert.Equal($"Gemm '/fc/Gemm': {reason}", Assert.Single(map.Refusals).ToString());
        }
    }
}
