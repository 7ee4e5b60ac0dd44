using Quantc.Onnx;
using Quantc.Onnx.Proto;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>Topological order and cycles (QuikGraph underneath): cycles found, named and refused at load; the stable order unchanged.</summary>
public class CycleTests
{
    [Fact]
    public void ACycleIsFoundAndNamed()
    {
        var (m, a, b, _, _) = GraphEditTests.Chain();
        using (m)
        {
            var g = m.Graph;
            Assert.Null(g.FindCycle());
            a.SetInput(0, b.Output);                        // A ← B ← A
            var cycle = g.FindCycle()!;
            Assert.Equal([a, b], cycle);
            const string expected = "graph 'main' has a cycle: A → B → A";
            Assert.Equal(expected, g.DescribeCycle(cycle));
            Assert.Contains(expected, g.FindProblems());
            var e = Assert.Throws<GraphValidationException>(() => g.TopologicalOrder());
            Assert.Equal([expected], e.Problems);
        }
    }

    [Fact]
    public void ANodeReadingItsOwnOutputIsACycleOfOne()
    {
        var (m, a, _, _, _) = GraphEditTests.Chain();
        using (m)
        {
            a.SetInput(0, a.Output);
            Assert.Equal("graph 'main' has a cycle: A → A", m.Graph.DescribeCycle(m.Graph.FindCycle()!));
        }
    }

    [Fact]
    public void TheShortestCycleThroughTheFirstNodeOnOneIsNamedAndALongOneShortened()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(4));
        var first = g.AddNode("Add", [x, x], name: "n0");
        var prev = first;
        for (int i = 1; i < 20; i++) prev = g.AddNode("Relu", [prev.Output], name: $"n{i}");
        // n0 ← n19 closes a ring of twenty; n0 ← n2 a shorter one through the same node.
        first.SetInput(1, prev.Output);
        var ring = g.FindCycle()!;
        Assert.Equal(20, ring.Count);
        Assert.Equal("graph 'main' has a cycle: n0 → n1 → n2 → n3 → … (14 more) → n18 → n19 → n0", g.DescribeCycle(ring));
        first.SetInput(0, g.Nodes[2].Output);
        Assert.Equal("graph 'main' has a cycle: n0 → n1 → n2 → n0", g.DescribeCycle(g.FindCycle()!));
    }

    [Fact]
    public void ACycleThroughASubgraphCaptureIsTheOwnersCycle()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(4));
        var cond = g.AddInput("cond", Type(TensorProto.Types.DataType.Bool));
        var iff = g.AddNode("If", [cond], name: "if", outputNames: ["y"]);
        var relu = g.AddNode("Relu", [iff.Output], name: "relu");
        var then = iff.SetSubgraph("then_branch", "then");
        then.AddOutput(then.AddNode("Neg", [relu.Output], name: "neg", outputNames: ["t"]).Output);   // reads relu, which reads the If
        var els = iff.SetSubgraph("else_branch", "else");
        els.AddOutput(els.AddNode("Abs", [x], name: "abs", outputNames: ["e"]).Output);
        g.AddOutput(relu.Output);
        Assert.Equal("graph 'main' has a cycle: if → relu → if", g.DescribeCycle(g.FindCycle()!));
        Assert.Null(then.FindCycle());
    }

    [Fact]
    public void LoadingACyclicModelIsBadInputNamingTheCycle()
    {
        var p = CyclicProto();
        var e = Assert.Throws<BadInputException>(() => Model.FromProto(p));
        Assert.Equal("graph 'main' has a cycle: a → b → a", e.Message);
        // The same in a subgraph: the If's then-branch holds the cycle.
        var outer = new GraphProto { Name = "outer" };
        outer.Input.Add(new ValueInfoProto { Name = "c", Type = Type(TensorProto.Types.DataType.Bool) });
        outer.Input.Add(new ValueInfoProto { Name = "x", Type = F32(4) });
        var iff = new NodeProto { OpType = "If", Name = "if" };
        iff.Input.Add("c");
        iff.Output.Add("y");
        iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = p.Graph });
        var els = p.Graph.Clone();
        els.Name = "else";
        els.Node.Clear();
        els.Output.Clear();
        els.Output.Add(new ValueInfoProto { Name = "x" });
        iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = els });
        outer.Node.Add(iff);
        outer.Output.Add(new ValueInfoProto { Name = "y" });
        var wrapped = new ModelProto { IrVersion = 10, Graph = outer };
        wrapped.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        e = Assert.Throws<BadInputException>(() => Model.FromProto(wrapped));
        Assert.Equal("graph 'main' has a cycle: a → b → a", e.Message);
    }

    /// <summary>x → a(Add x, b_out) → b(Relu) → a: written as a protobuf, since the IR refuses it.</summary>
    internal static ModelProto CyclicProto()
    {
        var g = new GraphProto { Name = "main" };
        g.Input.Add(new ValueInfoProto { Name = "x", Type = F32(4) });
        var a = new NodeProto { OpType = "Add", Name = "a" };
        a.Input.Add("x");
        a.Input.Add("b_out");
        a.Output.Add("a_out");
        var b = new NodeProto { OpType = "Relu", Name = "b" };
        b.Input.Add("a_out");
        b.Output.Add("b_out");
        g.Node.Add(a);
        g.Node.Add(b);
        g.Output.Add(new ValueInfoProto { Name = "b_out", Type = F32(4) });
        var p = new ModelProto { IrVersion = 10, Graph = g };
        p.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        return p;
    }

    /// <summary>The order the IR gave before QuikGraph carried its edges: of the ready nodes, the earliest in the list first.</summary>
    private static List<Node> EarliestReadyFirst(Graph g)
    {
        var nodes = g.Nodes;
        var index = nodes.Select((n, i) => (n, i)).ToDictionary(t => t.n, t => t.i);
        var pending = new int[nodes.Count];
        var dependents = nodes.Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < nodes.Count; i++)
            foreach (var v in Graph.Dependencies(nodes[i]))
                if (v.Producer is { } p && index.TryGetValue(p, out int pi)) { pending[i]++; dependents[pi].Add(i); }
        var ready = new SortedSet<int>(Enumerable.Range(0, nodes.Count).Where(i => pending[i] == 0));
        var result = new List<Node>();
        while (ready.Count > 0)
        {
            int i = ready.Min;
            ready.Remove(i);
            result.Add(nodes[i]);
            foreach (int d in dependents[i]) if (--pending[d] == 0) ready.Add(d);
        }
        return result;
    }

    private static Model Load(string which)
    {
        if (which == "block") return TorchBlock();
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "models", which))) return Model.Load(Path.Combine(d.FullName, "models", which));
        throw new FileNotFoundException(which);
    }

    [Theory]
    [InlineData("block", 1)]
    [InlineData("block", 2)]
    [InlineData("tiny-llama.onnx", 3)]
    [InlineData("tiny-mamba.onnx", 4)]
    public void TheOrderIsTheEarliestReadyNodeFirstOnShuffledGraphs(string which, int seed)
    {
        using var m = Load(which);
        var g = m.Graph;
        Assert.Equal(g.Nodes, g.TopologicalOrder());        // a sorted list comes back as it is
        var rng = new Random(seed);
        for (int k = 0; k < 3 * g.Nodes.Count; k++)
        {
            var n = g.Nodes[rng.Next(g.Nodes.Count)];
            var before = g.Nodes[rng.Next(g.Nodes.Count)];
            if (!ReferenceEquals(n, before)) g.MoveBefore(n, before);
        }
        var expected = EarliestReadyFirst(g);
        Assert.Equal(g.Nodes.Count, expected.Count);
        Assert.Equal(expected, g.TopologicalOrder());
        g.SortTopologically();
        Assert.Equal(expected, g.Nodes);
        g.Validate();
    }

    [Fact]
    public void ADeepChainIsCheckedWithoutRunningOutOfStack()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var v = g.AddInput("x", F32(4));
        for (int i = 0; i < 100_000; i++) v = g.AddNode("Relu", [v]).Output;
        g.AddOutput(v);
        Assert.Null(g.FindCycle());
        Assert.Equal(100_000, g.TopologicalOrder().Count);
        g.Nodes[0].SetInput(0, v);
        Assert.Equal(100_000, g.FindCycle()!.Count);
    }
}
