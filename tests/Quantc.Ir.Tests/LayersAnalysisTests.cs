using Quantc.Ir.Layers;
using Quantc.Models;
using Quantc.Onnx.Proto;

namespace Quantc.Ir.Tests;

/// <summary>Layer analysis on the reference models and on hand-built graphs; the pattern matcher's commutations and refusals.</summary>
public class LayersAnalysisTests
{
    [Theory]
    [InlineData("torch", "decomposed")]
    [InlineData("ortgenai", "SimplifiedLayerNormalization")]
    public void LlamaLayersAndTheirNormsAreRecognisedInBothFlavors(string flavor, string firstNormForm)
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, flavor);
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(4 * 7 + 1, map.Linears.Count); // 4 layers × (q, k, v, o, gate, up, down) + lm_head
        Assert.Equal(4 * 2 + 1, map.Norms.Count);
        Assert.Equal(firstNormForm, map.Norms[0].Form);
        Assert.All(map.Norms, n => Assert.Equal(NormKind.RmsNorm, n.Kind));
        foreach (var proj in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Equal("model.layers.2.input_layernorm", map[$"model.layers.2.self_attn.{proj}"]!.FedBy!.Name);
        foreach (var proj in new[] { "gate_proj", "up_proj" })
            Assert.Equal("model.layers.2.post_attention_layernorm", map[$"model.layers.2.mlp.{proj}"]!.FedBy!.Name);
        Assert.Null(map["model.layers.2.mlp.down_proj"]!.FedBy);
        Assert.Null(map["model.layers.2.self_attn.o_proj"]!.FedBy);
        Assert.Equal("model.norm", map["lm_head"]!.FedBy!.Name);
        var q = map["model.layers.0.self_attn.q_proj"]!;
        Assert.Equal(3, map.Readers(q.Input).Count);
        Assert.Equal(128, q.InFeatures);
        if (flavor == "torch") Assert.Equal(1e-5f, map.Norms[0].Epsilon, 7);
    }

    [Fact]
    public void OptLayerNormsAndBiasesAreRecognised()
    {
        using var m = ReferenceModels.Build("opt", "tiny");
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.All(map.Norms, n => Assert.Equal(NormKind.LayerNorm, n.Kind));
        Assert.All(map.Norms, n => Assert.NotNull(n.Beta));
        var fc1 = map["model.decoder.layers.0.fc1"]!;
        Assert.NotNull(fc1.Bias);
        Assert.NotNull(fc1.BiasAdd);
        Assert.Equal("model.decoder.layers.0.final_layer_norm", fc1.FedBy!.Name);
        Assert.Same(fc1.BiasAdd!.Output, fc1.Output);
    }

    private static TypeProto T(params long[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims) s.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = s } };
    }

    /// <summary>A decomposed RMSNorm feeding a MatMul, in the variants torch emits and a few it does not.</summary>
    private static (Model Model, Node Out) RmsBlock(bool gammaFirst = true, bool useDiv = false, long reduceAxis = -1, float exponent = 2f, bool gammaConst = true)
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T(2, 3, 8));
        var pow = g.AddNode("Pow", [x, g.AddInitializer(Tensor.FromFloats("two", [], [exponent]))]);
        var mean = g.AddNode("ReduceMean", [pow.Output, g.AddInitializer(Tensor.FromValues<long>("axes", 7, [1], [reduceAxis]))]);
        var add = g.AddNode("Add", [g.AddInitializer(Tensor.FromFloats("eps", [], [1e-6f])), mean.Output]); // commuted on purpose
        var sqrt = g.AddNode("Sqrt", [add.Output]);
        Node normed = useDiv ? g.AddNode("Div", [x, sqrt.Output]) : g.AddNode("Mul", [g.AddNode("Reciprocal", [sqrt.Output]).Output, x]);
        Value gamma = gammaConst ? g.AddInitializer(Tensor.FromFloats("norm.weight", [8], Enumerable.Repeat(1f, 8).ToArray())) : g.AddInput("gamma", T(8));
        var scaled = g.AddNode("Mul", gammaFirst ? [gamma, normed.Output] : [normed.Output, gamma]);
        var mm = g.AddNode("MatMul", [scaled.Output, g.AddInitializer(Tensor.FromFloats("fc.weight", [8, 4], new float[32]))], name: "/fc/MatMul");
        g.AddOutput(mm.Output);
        return (m, scaled);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void DecomposedRmsNormMatchesWithCommutedInputsAndDivForm(bool gammaFirst, bool useDiv)
    {
        var (m, scaled) = RmsBlock(gammaFirst, useDiv);
        using (m)
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            var norm = Assert.Single(map.Norms);
            Assert.Equal("norm", norm.Name);
            Assert.Same(scaled.Output, norm.Output);
            Assert.Equal("x", norm.Input.Name);
            Assert.Equal(1e-6f, norm.Epsilon);
            Assert.Equal(useDiv ? 6 : 7, norm.Nodes.Count);
            Assert.Equal("norm", Assert.Single(map.Linears).FedBy!.Name);
        }
    }

    [Theory]
    [InlineData(0L, 2f, true)]    // ReduceMean over the batch axis
    [InlineData(-1L, 3f, true)]   // x³, not x²
    [InlineData(-1L, 2f, false)]  // γ is not a constant
    public void NearMissesAreNotNorms(long axis, float exponent, bool gammaConst)
    {
        var (m, _) = RmsBlock(reduceAxis: axis, exponent: exponent, gammaConst: gammaConst);
        using (m) Assert.Empty(LayerAnalysis.Analyze(m.Graph).Norms);
    }

    [Fact]
    public void MatMulWithANonConstantWeightIsRefusedWithAReason()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T(2, 8));
        var w = g.AddInput("w", T(8, 4));
        g.AddOutput(g.AddNode("MatMul", [x, w], name: "mm").Output);
        var map = LayerAnalysis.Analyze(g);
        Assert.Empty(map.Linears);
        Assert.Contains(map.Refusals, r => r.Contains("'mm'", StringComparison.Ordinal) && r.Contains("not a constant", StringComparison.Ordinal));
    }

    [Fact]
    public void GemmWithTransBAndBiasIsALinearLayer()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T(2, 8));
        var gemm = g.AddNode("Gemm", [x, g.AddInitializer(Tensor.FromFloats("fc.weight", [4, 8], new float[32])), g.AddInitializer(Tensor.FromFloats("fc.bias", [4], new float[4]))]);
        gemm.SetAttribute("transB", 1L);
        g.AddOutput(gemm.Output);
        var l = Assert.Single(LayerAnalysis.Analyze(g).Linears);
        Assert.Equal("fc", l.Name);
        Assert.True(l.WeightIsOutByIn);
        Assert.Equal(8, l.InFeatures);
        Assert.Equal(4, l.OutFeatures);
        Assert.NotNull(l.Bias);
    }

    [Fact]
    public void PatternCapturesAndSameValueConstraints()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var a = g.AddInput("a", T(4));
        var b = g.AddInput("b", T(4));
        var same = g.AddNode("Add", [a, a]);
        var diff = g.AddNode("Add", [a, b]);
        g.AddOutput(same.Output);
        g.AddOutput(diff.Output);
        var p = P.Op("Add", P.Var("x"), P.Var("x")).As("add");
        Assert.NotNull(p.MatchAt(same));
        Assert.Null(p.MatchAt(diff));
        var q = P.Op("Add", P.Var("x"), P.Var("y"));
        var match = q.MatchAt(diff)!;
        Assert.Same(a, match["x"]);
        Assert.Same(b, match["y"]);
        Assert.Single(match.Matched);
    }
}
