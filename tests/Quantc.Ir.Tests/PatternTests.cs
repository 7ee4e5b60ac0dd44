using Quantc.Ir.Patterns;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>The pattern matcher's features, each on a small graph: op and domain, constants, commutation, optional nodes, captures, constraints, backtracking.</summary>
public class PatternTests
{
    private static (Model M, Graph G, Value A, Value B) Inputs()
    {
        var m = Model.Create();
        var g = m.Graph;
        return (m, g, g.AddInput("a", F32(4)), g.AddInput("b", F32(4)));
    }

    [Fact]
    public void OpTypeAndDomainDefaultDomainHasTwoSpellings()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var plain = g.AddNode("Relu", [a]);
            var spelled = g.AddNode("Relu", [a], domain: "ai.onnx");
            var ms = g.AddNode("Relu", [a], domain: "com.microsoft");
            var p = P.Op("Relu", P.Var("x"));
            Assert.NotNull(p.MatchAt(plain));
            Assert.NotNull(p.MatchAt(spelled));
            Assert.Null(p.MatchAt(ms));
            Assert.Null(P.Op("Sigmoid", P.Var("x")).MatchAt(plain));                       // wrong op
            Assert.NotNull(P.Op("Relu", P.Var("x")).In("com.microsoft").MatchAt(ms));
            Assert.Null(P.Op("Relu", P.Var("x")).In("com.microsoft").MatchAt(plain));
            Assert.NotNull(P.Op("Relu", P.Var("x")).In("", "com.microsoft").MatchAt(ms));
        }
    }

    [Fact]
    public void CommutativeInputsMatchInEitherOrder()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var c = g.AddInitializer(Tensor.FromFloats("c", [], [3f]));
            var xc = g.AddNode("Add", [a, c]);
            var cx = g.AddNode("Add", [c, a]);
            var ordered = P.Op("Add", P.Var("x"), P.Const("k"));
            Assert.NotNull(ordered.MatchAt(xc));
            Assert.Null(ordered.MatchAt(cx));
            var either = P.Op("Add", P.Var("x"), P.Const("k")).Commutative();
            foreach (var n in new[] { xc, cx })
            {
                var match = either.MatchAt(n)!;
                Assert.Same(a, match["x"]);
                Assert.Same(c, match["k"]);
                Assert.Equal(3f, match.Scalar("k"));
            }
        }
    }

    [Fact]
    public void SameValueConstraint()
    {
        var (m, g, a, b) = Inputs();
        using (m)
        {
            var same = g.AddNode("Add", [a, a]);
            var diff = g.AddNode("Add", [a, b]);
            var p = P.Op("Add", P.Var("x"), P.Same("x")).As("add");
            Assert.NotNull(p.MatchAt(same));
            Assert.Null(p.MatchAt(diff));
            var q = P.Op("Add", P.Var("x"), P.Var("y"));
            var match = q.MatchAt(diff)!;
            Assert.Same(a, match["x"]);
            Assert.Same(b, match["y"]);
            Assert.Equal([diff], match.MatchedNodes);
        }
    }

    [Fact]
    public void LaterConstraintsRevisitEarlierCommutativeChoices()
    {
        // Add(Mul(p, q), p): the pattern Add(Mul(u, v), v) only matches with Mul's inputs swapped (u = q,
        // v = p), which a matcher that commits to the first order it tries would miss.
        var (m, g, p, q) = Inputs();
        using (m)
        {
            var mul = g.AddNode("Mul", [p, q]);
            var add = g.AddNode("Add", [mul.Output, p]);
            var pattern = P.Op("Add", P.Op("Mul", P.Var("u"), P.Var("v")).Commutative(), P.Same("v"));
            var match = pattern.MatchAt(add)!;
            Assert.Same(q, match["u"]);
            Assert.Same(p, match["v"]);
            Assert.Null(P.Op("Add", P.Op("Mul", P.Var("u"), P.Var("v")), P.Same("v")).MatchAt(add));
        }
    }

    [Fact]
    public void ConstantsAreInitializersOrConstantNodesWithTolerance()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var init = g.AddNode("Pow", [a, g.AddInitializer(Tensor.FromFloats("two", [], [2.0000001f]))]);
            var tensorNode = g.AddNode("Constant", []);
            tensorNode.SetAttribute(new Onnx.Proto.AttributeProto
            {
                Name = "value", Type = Onnx.Proto.AttributeProto.Types.AttributeType.Tensor,
                T = new Onnx.Proto.TensorProto { DataType = 1, FloatData = { 2f } },
            });
            var viaTensor = g.AddNode("Pow", [a, tensorNode.Output]);
            var floatNode = g.AddNode("Constant", []);
            floatNode.SetAttribute("value_float", 2.5f);
            var viaFloat = g.AddNode("Pow", [a, floatNode.Output]);
            var notConst = g.AddNode("Pow", [a, a]);

            var square = P.Op("Pow", P.Var("x"), P.Const(2f));
            Assert.NotNull(square.MatchAt(init));                       // within the default tolerance
            var viaNode = square.MatchAt(viaTensor)!;
            Assert.Contains(tensorNode, viaNode.MatchedNodes);          // the Constant node is part of the match
            Assert.Null(square.MatchAt(viaFloat));
            Assert.NotNull(P.Op("Pow", P.Var("x"), P.Const(2f, tolerance: 0.5f)).MatchAt(viaFloat));
            Assert.Null(square.MatchAt(notConst));
            var captured = P.Op("Pow", P.Var("x"), P.Const("e")).MatchAt(viaFloat)!;
            Assert.Equal(2.5f, captured.Scalar("e"));
            Assert.Equal(2.5f, captured.Tensors["e"].ToFloat32()[0]);
            Assert.Null(P.Op("Pow", P.Var("x"), P.Initializer("e")).MatchAt(viaFloat));   // initializers only
            Assert.NotNull(P.Op("Pow", P.Var("x"), P.Initializer("e")).MatchAt(init));
            Assert.NotNull(P.Op("Pow", P.Var("x"), P.Scalar("e")).MatchAt(init));
        }
    }

    [Fact]
    public void OptionalNodesMatchOrPassThrough()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var cast = g.AddNode("Cast", [a]);
            cast.SetAttribute("to", 1L);
            var withCast = g.AddNode("Relu", [cast.Output]);
            var without = g.AddNode("Relu", [a]);
            var p = P.Op("Relu", P.Optional(P.Op("Cast", P.Var("x")).As("cast")));
            var m1 = p.MatchAt(withCast)!;
            Assert.Same(a, m1["x"]);
            Assert.Same(cast, m1.Nodes["cast"]);
            Assert.Equal([withCast, cast], m1.MatchedNodes);
            var m2 = p.MatchAt(without)!;
            Assert.Same(a, m2["x"]);
            Assert.False(m2.Nodes.ContainsKey("cast"));

            // An optional bias Add, anchored either at the Add or (passing through) at the MatMul.
            var w = g.AddInitializer(Tensor.FromFloats("w", [4, 4], new float[16]));
            var mm = g.AddNode("MatMul", [a, w]);
            var add = g.AddNode("Add", [g.AddInitializer(Tensor.FromFloats("bias", [4], new float[4])), mm.Output]);
            var linear = P.Optional(P.Op("Add", P.Op("MatMul", P.Var("x"), P.Initializer("w")).As("mm"), P.Initializer("bias")).Commutative().As("add"));
            var atAdd = linear.MatchAt(add)!;
            Assert.Same(add, atAdd.Nodes["add"]);
            Assert.Same(mm, atAdd.Nodes["mm"]);
            var atMatMul = linear.MatchAt(mm)!;
            Assert.False(atMatMul.Values.ContainsKey("bias"));
            Assert.Throws<ArgumentOutOfRangeException>(() => P.Optional(P.Op("Cast", P.Var("x")), through: 1));
        }
    }

    [Fact]
    public void SingleUseWhereOutputAndBindings()
    {
        var (m, g, a, b) = Inputs();
        using (m)
        {
            var relu = g.AddNode("Relu", [a]);
            var neg = g.AddNode("Neg", [relu.Output]);
            var abs = g.AddNode("Abs", [relu.Output]);   // a second reader of relu
            Assert.NotNull(P.Op("Neg", P.Op("Relu", P.Var("x"))).MatchAt(neg));
            Assert.Null(P.Op("Neg", P.Op("Relu", P.Var("x")).SingleUse()).MatchAt(neg));

            var split = g.AddNode("Split", [b], outputCount: 2);
            split.SetAttribute("num_outputs", 2L);
            var second = g.AddNode("Relu", [split.Outputs[1]]);
            Assert.Null(P.Op("Relu", P.Op("Split", P.Var("x"))).MatchAt(second));            // output 0 by default
            Assert.NotNull(P.Op("Relu", P.Op("Split", P.Var("x")).Output(1)).MatchAt(second));
            Assert.NotNull(P.Op("Split", P.Var("x")).Output(1).MatchAt(split));               // anchored at output 1
            Assert.NotNull(P.Op("Split", P.Var("x")).Where(n => n.GetInt("num_outputs", 0) == 2).MatchAt(split));
            Assert.Null(P.Op("Split", P.Var("x")).Where(n => n.GetInt("num_outputs", 0) == 3).MatchAt(split));

            // Pre-bound captures: the Abs reading relu's output, given relu's output as y.
            var readsY = P.Op("Abs", P.Same("y"));
            Assert.NotNull(readsY.MatchAt(abs, new Dictionary<string, Value> { ["y"] = relu.Output }));
            Assert.Null(readsY.MatchAt(abs, new Dictionary<string, Value> { ["y"] = a }));
            Assert.Null(P.Op("Relu", P.Var("x", v => v.IsInitializer)).MatchAt(relu));   // a value predicate
        }
    }

    [Fact]
    public void MatchReportsNodesCapturesAndEscapingValues()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var sq = g.AddNode("Mul", [a, a], name: "sq");
            var mean = g.AddNode("ReduceMean", [sq.Output], name: "mean");
            var sqrt = g.AddNode("Sqrt", [mean.Output], name: "sqrt");
            g.AddOutput(mean.Output);                       // an intermediate that escapes the match
            var p = P.Op("Sqrt", P.Op("ReduceMean", P.Op("Mul", P.Var("x"), P.Same("x")).As("square")).As("mean"));
            var match = p.MatchAt(sqrt)!;
            Assert.Equal([sqrt, mean, sq], match.MatchedNodes);
            Assert.Same(sqrt, match.Root);
            Assert.Same(sq, match.NodeOf("square"));
            Assert.Null(match.NodeOf("nothing"));
            Assert.True(match.Covers(mean));
            Assert.Equal([mean.Output], match.EscapingValues());
            Assert.Throws<KeyNotFoundException>(() => match["missing"]);
            Assert.Equal("Sqrt(ReduceMean(Mul(x, =x) as square) as mean)", p.ToString());
        }
    }

    [Fact]
    public void PatternsReadLikeTheMath()
    {
        var rms = P.Op("Mul", P.Var("x"), P.Op("Reciprocal", P.Op("Sqrt", P.Op("Add",
            P.Op("ReduceMean", P.Op("Pow", P.Same("x"), P.Const(2f))), P.Const("eps")))));
        Assert.Equal("Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(=x, 2)), eps))))", rms.ToString());
    }

    [Fact]
    public void RuleCheckReturnsTheReasonForRefusing()
    {
        var (m, g, a, _) = Inputs();
        using (m)
        {
            var small = g.AddNode("Mul", [a, g.AddInitializer(Tensor.FromFloats("half", [], [0.5f]))]);
            var big = g.AddNode("Mul", [a, g.AddInitializer(Tensor.FromFloats("ten", [], [10f]))]);
            var rule = new Rule("scale", P.Op("Mul", P.Var("x"), P.Scalar("s")).Commutative(),
                mt => mt.Scalar("s") > 1 ? $"scale {mt.Scalar("s")} is above 1" : null);
            Assert.Equal(MatchStatus.Accepted, rule.Try(small).Status);
            var refused = rule.Try(big);
            Assert.Equal(MatchStatus.Refused, refused.Status);
            Assert.Equal("scale 10 is above 1", refused.Reason);
            Assert.Equal(MatchStatus.NoMatch, rule.Try(g.AddNode("Relu", [a])).Status);
        }
    }
}
