using Quantc.Ir.Analysis;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>The QuikGraph view: topological order, reachability, ancestors and descendants, the subgraph between two values.</summary>
public class GraphViewTests
{
    private static void AssertTopological(IReadOnlyList<Node> order, GraphView view)
    {
        var pos = order.Select((n, i) => (n, i)).ToDictionary(t => t.n, t => t.i);
        foreach (var e in view.Quik.Edges) Assert.True(pos[e.Source] < pos[e.Target], $"{e} goes backwards");
    }

    [Fact]
    public void HandCheckedChain()
    {
        var (m, a, b, c, d) = GraphEditTests.Chain();
        using (m)
        {
            var view = new GraphView(m.Graph);
            var order = view.TopologicalOrder();
            AssertTopological(order, view);
            Assert.Equal(m.Graph.TopologicalOrder().ToHashSet(), order.ToHashSet());
            Assert.Equal(2, view.EdgeCount);                // A→B (A_out), B→C (B_out); x is a graph input
            Assert.True(view.IsAcyclic);
            Assert.True(view.Reaches(a, c));
            Assert.False(view.Reaches(c, a));
            Assert.False(view.Reaches(d, c));
            Assert.False(view.Reaches(a, a));
            Assert.Equal([a, b], view.Ancestors(c).OrderBy(n => n.Name));
            Assert.Equal([b, c], view.Descendants(a).OrderBy(n => n.Name));
            Assert.Equal([b], view.Consumers(a));
            Assert.Equal([b], view.Producers(c));
            Assert.Equal([a, b, c], view.Between(m.Graph["x"], c.Output));
            Assert.Equal([b, c], view.Between(a.Output, c.Output));
            Assert.Empty(view.Between(d.Output, c.Output));
            Assert.Empty(view.Between(c.Output, a.Output));
            Assert.True(view.Reaches(m.Graph["x"], d));
            Assert.True(view.DependsOn(c.Output, a.Output));
            Assert.False(view.DependsOn(a.Output, c.Output));
            Assert.True(view.DependsOn(a.Output, a.Output));
            Assert.Equal([a, c, d], view.Readers(m.Graph["x"]).OrderBy(n => n.Name));
            Assert.Equal([a, b, c, d], view.Descendants(m.Graph["x"]).OrderBy(n => n.Name));
            Assert.Equal([a, b], view.Ancestors(b.Output).OrderBy(n => n.Name));
            Assert.Empty(view.Ancestors(m.Graph["x"]));
        }
    }

    [Fact]
    public void TopologicalOrderOfABlockWhoseNodeListIsShuffled()
    {
        using var m = TorchBlock();
        var g = m.Graph;
        // Move every MatMul to the front: the node list is no longer in dependency order.
        foreach (var mm in g.Nodes.Where(n => n.Is("MatMul")).ToList()) g.MoveBefore(mm, g.Nodes[0]);
        g.Validate();
        var view = new GraphView(g);
        var quik = view.TopologicalOrder();
        AssertTopological(quik, view);
        var ir = g.TopologicalOrder();
        AssertTopological(ir, view);
        Assert.Equal(ir.ToHashSet(), quik.ToHashSet());
        Assert.Equal(g.Nodes.Count, quik.Count);
    }

    [Fact]
    public void ACycleIsReported()
    {
        var (m, a, b, _, _) = GraphEditTests.Chain();
        using (m)
        {
            a.SetInput(0, b.Output);
            var view = new GraphView(m.Graph);
            Assert.False(view.IsAcyclic);
            Assert.True(view.Reaches(a, a));
            Assert.Throws<GraphValidationException>(() => view.TopologicalOrder());
        }
    }

    [Fact]
    public void BetweenANormsInputAndOutputAreItsNodes()
    {
        using var m = TorchBlock();
        var g = m.Graph;
        var view = new GraphView(g);
        var map = LayerAnalysis.Analyze(g);
        var ln1 = map.Norms[0];
        Assert.Equal(ln1.Nodes.ToHashSet(), view.Between(ln1.Input, ln1.Output).ToHashSet());
        // From the norm's output to o_proj's: q, k, v, the attention stand-in (Mul, Add) and o_proj itself.
        var o = map["model.layers.0.self_attn.o_proj"]!;
        var between = view.Between(ln1.Output, o.Output);
        Assert.Equal(6, between.Count);
        Assert.Same(o.Node, between[^1]);
        Assert.All(map.Norms[0].Feeds, l => Assert.Contains(l.Node, between));
        // Reachability across the block.
        var down = map["model.layers.0.mlp.down_proj"]!;
        var q = map["model.layers.0.self_attn.q_proj"]!;
        Assert.True(view.Reaches(q.Node, down.Node));
        Assert.False(view.Reaches(down.Node, q.Node));
        Assert.True(view.Reaches(g["hidden_states"], down.Node));
        Assert.True(view.DependsOn(g["out"], ln1.Output));
        Assert.Contains(ln1.OutputNode, view.Ancestors(down.Node));
        Assert.DoesNotContain(down.Node, view.Ancestors(q.Node));
    }

    [Fact]
    public void SubgraphReadersFoldIntoTheirOwner()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(4));
        var cond = g.AddInput("cond", Type(Onnx.Proto.TensorProto.Types.DataType.Bool));
        var relu = g.AddNode("Relu", [x]);
        var iff = g.AddNode("If", [cond], outputNames: ["y"]);
        var then = iff.SetSubgraph("then_branch", "then");
        var inner = then.AddNode("Neg", [relu.Output], outputNames: ["t"]);
        then.AddOutput(inner.Output);
        var els = iff.SetSubgraph("else_branch", "else");
        els.AddOutput(els.AddNode("Abs", [relu.Output], outputNames: ["e"]).Output);
        g.AddOutput(iff.Output);
        var view = new GraphView(g);
        Assert.Same(iff, view.LocalNode(inner));
        Assert.Equal([iff], view.Readers(relu.Output));
        Assert.Equal([relu], view.Producers(iff));
        Assert.True(view.Reaches(x, iff));
        Assert.Equal([relu, iff], view.Between(x, iff.Output));
        Assert.Null(new GraphView(then).LocalNode(relu));
    }
}
