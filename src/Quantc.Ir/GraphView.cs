using QuikGraph;
using QuikGraph.Algorithms;

namespace Quantc.Ir;

/// <summary>A dataflow edge: <see cref="Value"/> flows from <see cref="Source"/> (its producer) to <see cref="Target"/> (a consumer).</summary>
public sealed class DataflowEdge(Node source, Node target, Value value) : IEdge<Node>
{
    public Node Source { get; } = source;
    public Node Target { get; } = target;
    public Value Value { get; } = value;
}

/// <summary>
/// A QuikGraph view of one graph's nodes (edges = values from producer to consumer, including
/// outer values that subgraphs capture), for dataflow queries: topological order, reachability,
/// ancestors and descendants, and the subgraph between two values.
/// </summary>
public sealed class GraphView
{
    private readonly BidirectionalGraph<Node, DataflowEdge> _g = new(allowParallelEdges: true);

    public GraphView(Graph graph)
    {
        Graph = graph;
        _g.AddVertexRange(graph.Nodes);
        var local = graph.Nodes.ToHashSet();
        foreach (var n in graph.Nodes)
            foreach (var v in Graph.Dependencies(n).Distinct())
                if (v.Producer is { } p && local.Contains(p)) _g.AddEdge(new DataflowEdge(p, n, v));
    }

    public Graph Graph { get; }

    /// <summary>The underlying QuikGraph graph.</summary>
    public IBidirectionalGraph<Node, DataflowEdge> Quik => _g;

    /// <summary>Nodes in a topological order (QuikGraph's algorithm).</summary>
    public IReadOnlyList<Node> TopologicalOrder() => _g.TopologicalSort().ToList();

    /// <summary>Every node downstream of <paramref name="node"/> (not including it).</summary>
    public HashSet<Node> Descendants(Node node)
    {
        var seen = new HashSet<Node>();
        var stack = new Stack<Node>([node]);
        while (stack.Count > 0)
            foreach (var e in _g.OutEdges(stack.Pop()))
                if (seen.Add(e.Target)) stack.Push(e.Target);
        return seen;
    }

    /// <summary>Every node upstream of <paramref name="node"/> (not including it).</summary>
    public HashSet<Node> Ancestors(Node node)
    {
        var seen = new HashSet<Node>();
        var stack = new Stack<Node>([node]);
        while (stack.Count > 0)
            foreach (var e in _g.InEdges(stack.Pop()))
                if (seen.Add(e.Source)) stack.Push(e.Source);
        return seen;
    }

    /// <summary>True when <paramref name="to"/> is downstream of <paramref name="from"/>.</summary>
    public bool Reaches(Node from, Node to) => Descendants(from).Contains(to);

    /// <summary>True when value <paramref name="v"/> (through its consumers) influences node <paramref name="to"/>.</summary>
    public bool Reaches(Value v, Node to) => v.Uses.Any(u => ReferenceEquals(u.Node, to) || (u.Node.Graph == Graph && Reaches(u.Node, to)));

    /// <summary>The nodes on some path from value <paramref name="from"/> to value <paramref name="to"/> (its producer included), in topological order.</summary>
    public IReadOnlyList<Node> Between(Value from, Value to)
    {
        if (to.Producer is not { } end || !_g.ContainsVertex(end)) return [];
        var upstream = Ancestors(end);
        upstream.Add(end);
        var downstream = new HashSet<Node>();
        foreach (var u in from.Uses)
            if (_g.ContainsVertex(u.Node))
            {
                downstream.Add(u.Node);
                downstream.UnionWith(Descendants(u.Node));
            }
        upstream.IntersectWith(downstream);
        return TopologicalOrder().Where(upstream.Contains).ToList();
    }
}
