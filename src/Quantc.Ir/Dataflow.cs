using QuikGraph;
using QuikGraph.Algorithms;

namespace Quantc.Ir;

/// <summary>
/// One graph's dataflow as a QuikGraph graph: vertex i is the graph's i-th node, an edge runs from a
/// value's producer to each node that reads it (once per read; a value a subgraph captures is read by
/// the node that owns the subgraph). Graph inputs and initializers have no producer and no vertex.
/// A snapshot: build a new one after editing the graph.
/// </summary>
internal sealed class Dataflow
{
    private readonly IReadOnlyList<Node> _nodes;
    private readonly BidirectionalGraph<int, SEdge<int>> _g;

    public Dataflow(Graph graph)
    {
        _nodes = graph.Nodes;
        var index = new Dictionary<Node, int>(_nodes.Count, ReferenceEqualityComparer.Instance);
        for (int i = 0; i < _nodes.Count; i++) index[_nodes[i]] = i;
        _g = new BidirectionalGraph<int, SEdge<int>>(allowParallelEdges: true, vertexCapacity: _nodes.Count, edgeCapacity: -1);
        _g.AddVertexRange(Enumerable.Range(0, _nodes.Count));
        for (int i = 0; i < _nodes.Count; i++)
            foreach (var v in Graph.Dependencies(_nodes[i]))
                if (v.Producer is { } p && index.TryGetValue(p, out int pi)) _g.AddEdge(new SEdge<int>(pi, i));
    }

    /// <summary>
    /// The nodes in a topological order that keeps file order where it can: of the nodes whose
    /// producers are all placed, the earliest in the node list goes next (so a sorted list is
    /// returned as it is). QuikGraph's own sorts (depth first, or sources first by in-degree) are
    /// valid orders too but not this one, and passes that re-sort must write the same file every
    /// time, so the walk is here, over QuikGraph's edges. Null on a cycle.
    /// </summary>
    public List<Node>? StableOrder()
    {
        int n = _nodes.Count;
        var pending = new int[n];
        var ready = new PriorityQueue<int, int>();
        for (int i = 0; i < n; i++)
            if ((pending[i] = _g.InDegree(i)) == 0) ready.Enqueue(i, i);
        var result = new List<Node>(n);
        while (ready.TryDequeue(out int i, out _))
        {
            result.Add(_nodes[i]);
            foreach (var e in _g.OutEdges(i))
                if (--pending[e.Target] == 0) ready.Enqueue(e.Target, e.Target);
        }
        return result.Count == n ? result : null;
    }

    /// <summary>True when no node depends on itself (QuikGraph's depth-first check).</summary>
    public bool IsAcyclic => _g.IsDirectedAcyclicGraph();

    /// <summary>
    /// A shortest cycle through the earliest node (in file order) that lies on one, as its nodes in
    /// dataflow order (the first one's producer is the last one); null when the graph is acyclic.
    /// QuikGraph finds the strongly connected components and the breadth-first paths inside one.
    /// </summary>
    public IReadOnlyList<Node>? FindCycle()
    {
        if (IsAcyclic) return null;
        var component = new Dictionary<int, int>();
        _g.StronglyConnectedComponents(component);
        var size = component.Values.GroupBy(c => c).ToDictionary(c => c.Key, c => c.Count());
        int start = -1;
        for (int i = 0; i < _nodes.Count && start < 0; i++)
            if (size[component[i]] > 1 || _g.OutEdges(i).Any(e => e.Target == i)) start = i;
        if (_g.OutEdges(start).Any(e => e.Target == start)) return [_nodes[start]];

        // Inside the component: breadth-first from the start, then back to it along the in-edge whose source is nearest.
        int c = component[start];
        var inside = new AdjacencyGraph<int, SEdge<int>>(allowParallelEdges: false);
        inside.AddVertexRange(component.Where(kv => kv.Value == c).Select(kv => kv.Key).OrderBy(i => i));
        foreach (var e in _g.Edges)
            if (component[e.Source] == c && component[e.Target] == c && !inside.ContainsEdge(e.Source, e.Target)) inside.AddEdge(e);
        var paths = inside.TreeBreadthFirstSearch(start);
        List<SEdge<int>>? best = null;
        foreach (var e in _g.InEdges(start).Where(e => component[e.Source] == c).OrderBy(e => e.Source))
            if (paths(e.Source, out var path) && (best is null || path.Count() < best.Count)) best = path.ToList();
        var cycle = new List<Node> { _nodes[start] };
        foreach (var e in best!) cycle.Add(_nodes[e.Target]);
        return cycle;
    }

    /// <summary>
    /// "graph 'g' has a cycle: a → b → a": the cycle's node names (an unnamed node as its op and first
    /// output), the first repeated at the end; past eight nodes the middle is left out with its count.
    /// </summary>
    public static string Describe(Graph graph, IReadOnlyList<Node> cycle)
    {
        static string NameOf(Node n) => n.Name.Length > 0 ? n.Name : n.ToString();
        var names = cycle.Select(NameOf).ToList();
        if (names.Count > 8)
            names = [.. names.Take(4), $"… ({names.Count - 6} more)", .. names.TakeLast(2)];
        names.Add(NameOf(cycle[0]));
        return $"graph '{graph.Name}' has a cycle: {string.Join(" → ", names)}";
    }
}
