using Quantc.Ir.Analysis;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>Norm recognition: every spelling of a decomposed RMSNorm, the fused ops, and near misses with their reasons.</summary>
public class NormPatternTests
{
    /// <summary>x → RMSNorm → MatMul, with the norm spelled as given.</summary>
    private static (Model Model, Value Out) RmsGraph(RmsSpelling s, Func<Graph, Value>? gamma = null)
    {
        var m = Model.Create(opset: 18);
        var g = m.Graph;
        var x = g.AddInput("x", F32(ActivationShape));
        var y = RmsNorm(g, x, "/norm", gamma?.Invoke(g) ?? Gamma(g, "norm.weight", 1), s);
        g.AddOutput(Linear(g, y, "/fc", "fc.weight", Hidden, 4, 2));
        g.Validate();
        return (m, y);
    }

    public static TheoryData<string> Spellings() =>
        ["torch", "gamma_first", "div", "reciprocal_as_div", "square_as_mul", "axes_attribute", "eps_first", "cast_around", "eps_constant_node", "axis_2"];

    private static RmsSpelling Spelling(string name) => name switch
    {
        "torch" => new RmsSpelling(),
        "gamma_first" => new RmsSpelling { GammaFirst = true },
        "div" => new RmsSpelling { UseDiv = true },
        "reciprocal_as_div" => new RmsSpelling { ReciprocalAsDiv = true },
        "square_as_mul" => new RmsSpelling { SquareAsMul = true },
        "axes_attribute" => new RmsSpelling { AxesAsAttribute = true },
        "eps_first" => new RmsSpelling { EpsFirst = true, EpsDims = [1] },
        "cast_around" => new RmsSpelling { CastAround = true },
        "eps_constant_node" => new RmsSpelling { EpsAsConstantNode = true },
        "axis_2" => new RmsSpelling { Axis = 2 },
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Spellings))]
    public void DecomposedRmsNormIsRecognisedInEverySpelling(string spelling)
    {
        var s = Spelling(spelling);
        var (m, y) = RmsGraph(s);
        using (m)
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            var norm = Assert.Single(map.Norms);
            Assert.Empty(map.Refusals);
            Assert.Equal("norm", norm.Name);
            Assert.Equal(NormKind.RmsNorm, norm.Kind);
            Assert.Equal("decomposed", norm.Form);
            Assert.Same(y, norm.Output);
            Assert.Equal("x", norm.Input.Name);                 // before the Cast, when there is one
            Assert.Equal("norm.weight", norm.Gamma.Name);
            Assert.Null(norm.Beta);
            Assert.Equal(1e-6f, norm.Epsilon);
            Assert.Equal(Hidden, norm.HiddenSize);
            // Every node between x and y belongs to the norm (Constant nodes feed it from outside the dataflow from x).
            var between = Between(m.Graph["x"], y);
            Assert.Equal(between.ToHashSet(), norm.Nodes.Where(n => !n.Is("Constant")).ToHashSet());
            var fc = Assert.Single(map.Linears);
            Assert.Same(norm, fc.FedBy);
            Assert.Equal([fc], norm.Feeds);
        }
    }

    /// <summary>The nodes on some path from <paramref name="from"/> to <paramref name="to"/>: downstream of the one, upstream of the other.</summary>
    private static HashSet<Node> Between(Value from, Value to)
    {
        static HashSet<Node> Walk(IEnumerable<Node> starts, Func<Node, IEnumerable<Node>> next)
        {
            var seen = new HashSet<Node>();
            var stack = new Stack<Node>(starts);
            while (stack.TryPop(out var n))
                if (seen.Add(n)) foreach (var m in next(n)) stack.Push(m);
            return seen;
        }
        var down = Walk(from.Uses.Select(u => u.Node), n => n.Outputs.Where(o => o is not null).SelectMany(o => o!.Uses.Select(u => u.Node)));
        var up = Walk(to.Producer is { } p ? [p] : [], n => n.Inputs.Select(v => v?.Producer).OfType<Node>());
        down.IntersectWith(up);
        return down;
    }

    [Theory]
    [InlineData("axis_0", "reduces axis 0, not the last axis (2)")]
    [InlineData("keepdims_0", "has keepdims = 0")]
    [InlineData("two_axes", "reduces axes [1, 2], not only the last")]
    [InlineData("cube", "Pow raises to 3, not 2")]
    [InlineData("eps_vector", "epsilon '/norm/eps' has shape [2], not a single value")]
    [InlineData("gamma_input", "the normalised value is multiplied by 'gamma', which is not a constant")]
    [InlineData("gamma_constant_node", "γ '/norm/gamma_out' is the output of a Constant node, not an initializer")]
    [InlineData("gamma_2d", "γ 'norm.weight' has shape [1, 8], not 1-D")]
    [InlineData("gamma_size", "γ 'norm.weight' has 6 values but the hidden size is 8")]
    public void NearMissesAreRefusedWithAReason(string variant, string reason)
    {
        RmsSpelling s = variant switch
        {
            "axis_0" => new RmsSpelling { Axis = 0 },
            "keepdims_0" => new RmsSpelling { KeepDims = 0 },
            "cube" => new RmsSpelling { Exponent = 3f },
            "eps_vector" => new RmsSpelling { EpsDims = [2] },
            _ => new RmsSpelling(),
        };
        Func<Graph, Value>? gamma = variant switch
        {
            "gamma_input" => g => g.AddInput("gamma", F32(Hidden)),
            "gamma_constant_node" => g =>
            {
                var c = g.AddNode("Constant", [], name: "/norm/gamma", outputNames: ["/norm/gamma_out"]);
                var a = new Onnx.Proto.AttributeProto { Name = "value_floats", Type = Onnx.Proto.AttributeProto.Types.AttributeType.Floats };
                a.Floats.AddRange(Enumerable.Repeat(1f, Hidden));
                c.SetAttribute(a);
                return c.Output;
            },
            "gamma_2d" => g => Init(g, "norm.weight", [1, Hidden], 1),
            "gamma_size" => g => Init(g, "norm.weight", [6], 1),
            _ => null,
        };
        var (m, _) = RmsGraph(s, gamma);
        using (m)
        {
            if (variant == "two_axes")
            {
                var mean = m.Graph.Nodes.Single(n => n.Is("ReduceMean"));
                mean.SetInput(1, I64(m.Graph, "two_axes", 1, 2));
            }
            var map = LayerAnalysis.Analyze(m.Graph);
            Assert.Empty(map.Norms);
            var refusal = Assert.Single(map.Refusals);
            Assert.Equal("rmsnorm", refusal.Rule);
            Assert.StartsWith("Mul '/norm/Mul_1': not a usable RMSNorm: ", refusal.ToString(), StringComparison.Ordinal);
            Assert.EndsWith(reason, refusal.Reason, StringComparison.Ordinal);
            Assert.Null(Assert.Single(map.Linears).FedBy);
        }
    }

    [Fact]
    public void AValueFromTheWrongOpIsNotANormAtAll()
    {
        var (m, _) = RmsGraph(new RmsSpelling());
        using (m)
        {
            m.Graph.Nodes.Single(n => n.Is("Sqrt")).OpType = "Exp";
            var map = LayerAnalysis.Analyze(m.Graph);
            Assert.Empty(map.Norms);
            Assert.Empty(map.Refusals);      // not a near miss: nothing to explain
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("com.microsoft")]
    public void SimplifiedLayerNormalizationInEitherDomain(string domain)
    {
        using var m = OrtGenAiBlock(domain);
        var map = LayerAnalysis.Analyze(m.Graph);
        var norm = map.Norms[0];
        Assert.Equal("SimplifiedLayerNormalization", norm.Form);
        Assert.Equal(NormKind.RmsNorm, norm.Kind);
        Assert.Equal("model.layers.0.input_layernorm", norm.Name);
        Assert.Equal(1e-6f, norm.Epsilon);
        Assert.Same(m.Graph["hidden_states"], norm.Input);
        Assert.Null(norm.Skip);
    }

    [Fact]
    public void SkipSimplifiedLayerNormalizationRecordsItsResidual()
    {
        using var m = OrtGenAiBlock();
        var norm = LayerAnalysis.Analyze(m.Graph).Norms[1];
        Assert.Equal("SkipSimplifiedLayerNormalization", norm.Form);
        Assert.Equal("model.layers.0.post_attention_layernorm", norm.Name);
        Assert.Same(m.Graph["hidden_states"], norm.Skip);
        Assert.Equal("ln2", norm.Output.Name);
        Assert.Equal(1e-6f, norm.Epsilon);
    }

    private static Model Fused(string op, string domain, bool withBias = true, long axis = -1, bool gammaInit = true)
    {
        var m = Model.Create(opset: 23);
        var g = m.Graph;
        var x = g.AddInput("x", F32(ActivationShape));
        var gamma = gammaInit ? Gamma(g, "ln.weight", 1) : g.AddInput("ln.weight", F32(Hidden));
        var inputs = new List<Value?> { x, gamma };
        if (withBias) inputs.Add(Init(g, "ln.bias", [Hidden], 2));
        var n = g.AddNode(op, inputs, domain: domain, name: "/ln/" + op);
        n.SetAttribute("axis", axis);
        n.SetAttribute("epsilon", 1e-5f);
        g.AddOutput(Linear(g, n.Output, "/fc", "fc.weight", Hidden, 4, 3));
        return m;
    }

    [Fact]
    public void LayerNormalizationWithScaleAndBias()
    {
        using var m = Fused("LayerNormalization", "");
        var map = LayerAnalysis.Analyze(m.Graph);
        var norm = Assert.Single(map.Norms);
        Assert.Equal(NormKind.LayerNorm, norm.Kind);
        Assert.Equal("ln", norm.Name);
        Assert.Equal("ln.bias", norm.Beta!.Name);
        Assert.Equal(1e-5f, norm.Epsilon);
        Assert.Same(norm, Assert.Single(map.Linears).FedBy);
    }

    [Fact]
    public void RmsNormalizationOfOpset23()
    {
        using var m = Fused("RMSNormalization", "", withBias: false);
        var norm = Assert.Single(LayerAnalysis.Analyze(m.Graph).Norms);
        Assert.Equal(NormKind.RmsNorm, norm.Kind);
        Assert.Equal("RMSNormalization", norm.Form);
    }

    [Fact]
    public void FusedNormsOverOtherAxesOrWithoutInitializersAreRefused()
    {
        using (var m = Fused("LayerNormalization", "", axis: 1))
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            Assert.Empty(map.Norms);
            Assert.Equal("LayerNormalization '/ln/LayerNormalization': not a usable LayerNorm: it normalises from axis 1, not only over the last axis",
                Assert.Single(map.Refusals).ToString());
        }
        using (var m = Fused("SimplifiedLayerNormalization", "", withBias: false, gammaInit: false))
        {
            var map = LayerAnalysis.Analyze(m.Graph);
            Assert.Empty(map.Norms);
            Assert.EndsWith("scale 'ln.weight' is not a constant", Assert.Single(map.Refusals).Reason, StringComparison.Ordinal);
        }
        using (var m = Fused("LayerNormalization", "", axis: 2))   // 2 is the last axis of [2, 3, 8]
            Assert.Single(LayerAnalysis.Analyze(m.Graph).Norms);
    }

    [Fact]
    public void DecomposedLayerNormWithBetaIsOneLayerNormNotAnRmsNorm()
    {
        using var m = Model.Create(opset: 18);
        var g = m.Graph;
        var x = g.AddInput("x", F32(ActivationShape));
        var mean = g.AddNode("ReduceMean", [x, I64(g, "axes0", -1)], name: "/ln/ReduceMean");
        var centred = g.AddNode("Sub", [x, mean.Output], name: "/ln/Sub");
        var sq = g.AddNode("Pow", [centred.Output, g.AddInitializer(Tensor.FromFloats("two", [], [2f]))], name: "/ln/Pow");
        var variance = g.AddNode("ReduceMean", [sq.Output, I64(g, "axes1", -1)], name: "/ln/ReduceMean_1");
        var add = g.AddNode("Add", [variance.Output, g.AddInitializer(Tensor.FromFloats("eps", [], [1e-5f]))], name: "/ln/Add");
        var div = g.AddNode("Div", [centred.Output, g.AddNode("Sqrt", [add.Output], name: "/ln/Sqrt").Output], name: "/ln/Div");
        var scaled = g.AddNode("Mul", [div.Output, Gamma(g, "ln.weight", 1)], name: "/ln/Mul");
        var shifted = g.AddNode("Add", [scaled.Output, Init(g, "ln.bias", [Hidden], 2)], name: "/ln/Add_1");
        g.AddOutput(Linear(g, shifted.Output, "/fc", "fc.weight", Hidden, 4, 3));
        var map = LayerAnalysis.Analyze(g);
        var norm = Assert.Single(map.Norms);
        Assert.Equal(NormKind.LayerNorm, norm.Kind);
        Assert.Same(x, norm.Input);
        Assert.Same(shifted.Output, norm.Output);
        Assert.Equal("ln.bias", norm.Beta!.Name);
        Assert.Equal(9, norm.Nodes.Count);
        Assert.Empty(map.Refusals);
        Assert.Same(norm, Assert.Single(map.Linears).FedBy);
    }
}
