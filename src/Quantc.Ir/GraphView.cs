using QuikGraph;
using QuikGraph.Algorithms;

namespace Quantc.Ir;

/// <summary>A dataflow edge: <see cref="Value"/> flows from <see cref="Source"/> (its producer) to <see cref="Target"/> (a consumer).</summary>
public sealed class DataflowEdge(Node source, Node target, Value value) : IEdge<Node>
{
    /// <summary>The node that produces <see cref="Value"/>.</summary>
    public Node Source { get; } = source;

    /// <summary>The node that reads <see cref="Value"/> (directly, or inside one of its subgraphs).</summary>
    public Node Target { get; } = target;

    /// <summary>The value flowing along the edge.</summary>
    public Value Value { get; } = value;

    /// <inheritdoc/>
    public override string ToString() => $"{Source} -[{Value.Name}]-> {Target}";
}

/// <summary>
/// A QuikGraph view of one graph's nodes for dataflow queries: vertices are the graph's nodes,
/// edges are values flowing from producer to consumer (one edge per value and consumer; a value a
/// subgraph captures is an edge to the node that owns the subgraph). Graph inputs and initializers
/// have no producer, so they are not vertices: queries that start at a value start at its readers.
/// The view is a snapshot: build a new one after editing the graph.
/// </summary>
public sealed class GraphView
{
    private readonly BidirectionalGraph<Node, DataflowEdge> _g = new(allowParallelEdges: true);
    private IReadOnlyList<Node>? _order;
    private Dictionary<Node, int>? _position;

    /// <summary>Builds the view of <paramref name="graph"/>'s nodes (its subgraphs' nodes are folded into their owners).</summary>
    public GraphView(Graph graph)
    {
        Graph = graph;
        _g.AddVertexRange(graph.Nodes);
        foreach (var n in graph.Nodes)
            foreach (var v in Graph.Dependencies(n).Distinct())
                if (v.Producer is { } p && _g.ContainsVertex(p)) _g.AddEdge(new DataflowEdge(p, n, v));
    }

    /// <summary>The graph viewed.</summary>
    public Graph Graph { get; }

    /// <summary>The underlying QuikGraph graph, for algorithms this class does not wrap.</summary>
    public IBidirectionalGraph<Node, DataflowEdge> Quik => _g;

    /// <summary>Number of dataflow edges.</summary>
    public int EdgeCount => _g.EdgeCount;

    /// <summary>The nodes that read an output of <paramref name="node"/> (each once, in edge order).</summary>
    public IReadOnlyList<Node> Consumers(Node node) => _g.OutEdges(node).Select(e => e.Target).Distinct().ToList();

    /// <summary>The nodes whose outputs <paramref name="node"/> reads (each once, in edge order).</summary>
    public IReadOnlyList<Node> Producers(Node node) => _g.InEdges(node).Select(e => e.Source).Distinct().ToList();

    /// <summary>True when the dataflow has no cycle.</summary>
    public bool IsAcyclic => _g.IsDirectedAcyclicGraph();

    /// <summary>Nodes in a topological order (QuikGraph's depth-first algorithm); throws <see cref="GraphValidationException"/> on a cycle.</summary>
    public IReadOnlyList<Node> TopologicalOrder()
    {
        if (_order is not null) return _order;
        try { _order = _g.TopologicalSort().ToList(); }
        catch (NonAcyclicGraphException)
        {
            throw new GraphValidationException([$"graph '{Graph.Name}' has a cycle"]);
        }
        return _order;
    }

    /// <summary>The node of this graph that is <paramref name="node"/> or holds it in a (nested) subgraph; null when it belongs elsewhere.</summary>
    public Node? LocalNode(Node node)
    {
        for (Node? n = node; n is not null; n = n.Graph.OwnerNode)
            if (ReferenceEquals(n.Graph, Graph)) return _g.ContainsVertex(n) ? n : null;
        return null;
    }

    /// <summary>The nodes of this graph that read <paramref name="v"/>, directly or inside their subgraphs.</summary>
    public IReadOnlyList<Node> Readers(Value v)
    {
        var result = new List<Node>();
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        foreach (var u in v.Uses)
            if (LocalNode(u.Node) is { } n && seen.Add(n)) result.Add(n);
        return result;
    }

    /// <summary>Every node downstream of <paramref name="node"/> (not including it).</summary>
    public HashSet<Node> Descendants(Node node) => Walk([node], forward: true, stop: null);

    /// <summary>Every node upstream of <paramref name="node"/> (not including it).</summary>
    public HashSet<Node> Ancestors(Node node) => Walk([node], forward: false, stop: null);

    /// <summary>Every node whose result depends on <paramref name="v"/>: its readers and their descendants.</summary>
    public HashSet<Node> Descendants(Value v)
    {
        var readers = Readers(v);
        var result = Walk(readers, forward: true, stop: null);
        result.UnionWith(readers);
        return result;
    }

    /// <summary>Every node <paramref name="v"/> is computed from: its producer and the producer's ancestors (empty for inputs and initializers).</summary>
    public HashSet<Node> Ancestors(Value v)
    {
        if (v.Producer is not { } p || LocalNode(p) is not { } local) return new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var result = Walk([local], forward: false, stop: null);
        result.Add(local);
        return result;
    }

    /// <summary>True when <paramref name="to"/> is downstream of <paramref name="from"/> (a node does not reach itself, unless through a cycle).</summary>
    public bool Reaches(Node from, Node to) => Walk([from], forward: true, stop: to).Contains(to);

    /// <summary>True when value <paramref name="from"/> influences node <paramref name="to"/> (it or an upstream node reads it).</summary>
    public bool Reaches(Value from, Node to)
    {
        var readers = Readers(from);
        return readers.Contains(to) || Walk(readers, forward: true, stop: to).Contains(to);
    }

    /// <summary>True when value <paramref name="v"/> is computed from value <paramref name="from"/> (or is it).</summary>
    public bool DependsOn(Value v, Value from) =>
        ReferenceEquals(v, from) || (v.Producer is { } p && LocalNode(p) is { } local && Reaches(from, local));

    /// <summary>
    /// The nodes on some path from value <paramref name="from"/> to value <paramref name="to"/>: readers
    /// of <paramref name="from"/> (and their descendants) that are <paramref name="to"/>'s producer or
    /// its ancestors — e.g. every node of a norm between its input and its output. Topological order;
    /// empty when <paramref name="to"/> does not depend on <paramref name="from"/>.
    /// </summary>
    public IReadOnlyList<Node> Between(Value from, Value to)
    {
        var upstream = Ancestors(to);
        if (upstream.Count == 0) return [];
        var downstream = Descendants(from);
        upstream.IntersectWith(downstream);
        return InOrder(upstream);
    }

    /// <summary><paramref name="nodes"/> sorted by <see cref="TopologicalOrder"/>.</summary>
    public IReadOnlyList<Node> InOrder(IEnumerable<Node> nodes)
    {
        if (_position is null)
        {
            var order = TopologicalOrder();
            _position = new Dictionary<Node, int>(order.Count, ReferenceEqualityComparer.Instance);
            for (int i = 0; i < order.Count; i++) _position[order[i]] = i;
        }
        var pos = _position;
        return nodes.Where(pos.ContainsKey).OrderBy(n => pos[n]).ToList();
    }

    private HashSet<Node> Walk(IEnumerable<Node> starts, bool forward, Node? stop)
    {
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Node>();
        foreach (var s in starts) if (_g.ContainsVertex(s)) stack.Push(s);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            var edges = forward ? _g.OutEdges(n).Select(e => e.Target) : _g.InEdges(n).Select(e => e.Source);
            foreach (var next in edges)
            {
                if (!seen.Add(next)) continue;
                if (ReferenceEquals(next, stop)) return seen;
                stack.Push(next);
            }
        }
        return seen;
    }
}
