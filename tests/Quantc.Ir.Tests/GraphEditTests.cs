using Quantc.Onnx.Proto;

namespace Quantc.Ir.Tests;

/// <summary>IR edits keep the graph consistent; Validate reports planted inconsistencies; the QuikGraph view answers dataflow queries.</summary>
public class GraphEditTests
{
    private static TypeProto T() => new() { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } };

    /// <summary>x → A(Relu) → B(Neg) → C(Add with x) → y; and D(Abs) on x, unused.</summary>
    private static (Model M, Node A, Node B, Node C, Node D) Chain()
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T());
        var a = g.AddNode("Relu", [x], name: "A");
        var b = g.AddNode("Neg", [a.Output], name: "B");
        var c = g.AddNode("Add", [b.Output, x], name: "C", outputNames: ["y"]);
        var d = g.AddNode("Abs", [x], name: "D");
        g.AddOutput(c.Output);
        return (m, a, b, c, d);
    }

    [Fact]
    public void EditsKeepTheGraphValid()
    {
        var (m, a, b, c, d) = Chain();
        using (m)
        {
            var g = m.Graph;
            g.Validate();
            // Insert a node between A and B.
            var mid = g.AddNode("Sigmoid", [a.Output], name: "mid", before: b);
            b.SetInput(0, mid.Output);
            g.Validate();
            Assert.Single(a.Output.Uses);
            // Replace B by Abs: new node, rewire uses, remove the old one.
            var abs = g.AddNode("Abs", [mid.Output], name: "B2", before: b);
            g.ReplaceAllUses(b.Output, abs.Output);
            g.RemoveNode(b);
            g.Validate();
            Assert.Same(abs.Output, c.Inputs[0]);
            // Rename a value; add an initializer with a unique name.
            g.RenameValue(mid.Output, "gate");
            Assert.Same(mid.Output, g["gate"]);
            var k1 = g.AddInitializer(Tensor.FromFloats("k", [], [2f]));
            var k2 = g.AddInitializer(Tensor.FromFloats("k", [], [3f]));
            Assert.NotEqual(k1.Name, k2.Name);
            Assert.NotEqual("gate", g.UniqueName("gate"));
            g.Validate();
            // Dead code: D and both unused initializers go.
            int removed = g.RemoveDeadCode();
            Assert.Equal(3, removed);
            Assert.DoesNotContain(d, g.Nodes);
            g.Validate();
            Assert.Throws<InvalidOperationException>(() => g.RemoveNode(a)); // still used
            Assert.Throws<InvalidOperationException>(() => g.RenameValue(a.Output, "y"));
        }
    }

    [Fact]
    public void ValidateReportsPlantedInconsistencies()
    {
        var (m, a, b, c, _) = Chain();
        using (m)
        {
            var g = m.Graph;
            g.RemoveNode(a, force: true);                  // B now reads a value nobody produces
            var problems = g.FindProblems();
            Assert.Contains(problems, p => p.Contains("'B'", StringComparison.Ordinal) || p.Contains("Neg", StringComparison.Ordinal));
            Assert.Throws<GraphValidationException>(g.Validate);
        }
        var (m2, a2, b2, _, _) = Chain();
        using (m2)
        {
            a2.SetInput(0, b2.Output);                     // A ← B ← A: a cycle
            Assert.Contains(m2.Graph.FindProblems(), p => p.Contains("cycle", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void SubgraphsCaptureOuterValuesAndStayConsistent()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T());
        var cond = g.AddInput("cond", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 9 } });
        var relu = g.AddNode("Relu", [x]);
        var iff = g.AddNode("If", [cond], outputNames: ["y"]);
        var then = iff.SetSubgraph("then_branch", "then");
        then.AddOutput(then.AddNode("Neg", [relu.Output], outputNames: ["t"]).Output);
        var els = iff.SetSubgraph("else_branch", "else");
        els.AddOutput(els.AddNode("Abs", [relu.Output], outputNames: ["e"]).Output);
        g.AddOutput(iff.Output);
        g.Validate();
        Assert.Equal(2, relu.Output.Uses.Count); // captured by both branches
        Assert.Contains(relu.Output, then.CapturedValues());
        Assert.Throws<InvalidOperationException>(() => g.RemoveNode(relu)); // captured, so still used
        var view = new GraphView(g);
        Assert.True(view.Reaches(relu, iff));               // the If depends on Relu through its branches
        Assert.Equal(new[] { relu, iff }, view.TopologicalOrder());
    }

    [Fact]
    public void QuikGraphViewAnswersDataflowQueries()
    {
        var (m, a, b, c, d) = Chain();
        using (m)
        {
            var view = new GraphView(m.Graph);
            var order = view.TopologicalOrder();
            Assert.True(order.ToList().IndexOf(a) < order.ToList().IndexOf(b) && order.ToList().IndexOf(b) < order.ToList().IndexOf(c));
            Assert.Equal(m.Graph.TopologicalOrder().Count, order.Count);
            Assert.True(view.Reaches(a, c));
            Assert.False(view.Reaches(c, a));
            Assert.False(view.Reaches(d, c));
            Assert.Equal(new[] { a, b }, view.Ancestors(c).OrderBy(n => n.Name));
            Assert.Equal(new[] { a, b, c }, view.Between(m.Graph["x"], c.Output));
            Assert.Equal(new[] { b, c }, view.Between(a.Output, c.Output));
            Assert.Empty(view.Between(d.Output, c.Output));
        }
    }
}
