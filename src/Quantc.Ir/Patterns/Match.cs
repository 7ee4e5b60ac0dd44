using System.Globalization;

namespace Quantc.Ir.Patterns;

/// <summary>
/// The result of matching a <see cref="Pattern"/>: the values, nodes and constant tensors it
/// captured by name, and every node it covered (the root first, then in the order the pattern
/// walked them). While matching, bindings are recorded on a trail so that a failed alternative
/// can be undone exactly.
/// </summary>
public sealed class Match
{
    private enum Kind : byte { Value, Node, Tensor, Covered }

    private readonly Dictionary<string, Value> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Node> _nodes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _tensors = new(StringComparer.Ordinal);
    private readonly List<Node> _covered = [];
    private readonly HashSet<Node> _coveredSet = new(ReferenceEqualityComparer.Instance);
    private readonly List<(Kind Kind, string? Key)> _trail = [];

    internal Match(Value rootValue) => RootValue = rootValue;

    /// <summary>The value the pattern was matched at (the root node's output).</summary>
    public Value RootValue { get; }

    /// <summary>The node whose output the pattern was matched at (null when that value has no producer).</summary>
    public Node? Root => RootValue.Producer;

    /// <summary>Values captured by name (<see cref="P.Var(string)"/>, <see cref="P.Const(string)"/>, <see
    /// cref="Pattern.Named"/>).</summary>
    public IReadOnlyDictionary<string, Value> Values => _values;

    /// <summary>Nodes captured by name (<see cref="OpPattern.As"/>).</summary>
    public IReadOnlyDictionary<string, Node> Nodes => _nodes;

    /// <summary>Constant tensors captured by name (<see cref="P.Const(string)"/> and friends).</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors => _tensors;

    /// <summary>Every node the pattern covered, root first, each once.</summary>
    public IReadOnlyList<Node> MatchedNodes => _covered;

    /// <summary>The value captured as <paramref name="name"/>; throws when there is none.</summary>
    public Value this[string name] =>
        _values.TryGetValue(name, out var v) ? v : throw new KeyNotFoundException($"the match captured no value '{name}'");

    /// <summary>The value captured as <paramref name="name"/>, or null.</summary>
    public Value? ValueOf(string name) => _values.GetValueOrDefault(name);

    /// <summary>The node captured as <paramref name="name"/>, or null.</summary>
    public Node? NodeOf(string name) => _nodes.GetValueOrDefault(name);

    /// <summary>The constant tensor captured as <paramref name="name"/>, or null.</summary>
    public Tensor? TensorOf(string name) => _tensors.GetValueOrDefault(name);

    /// <summary>The single element of the constant captured as <paramref name="name"/>, as float32.</summary>
    public float Scalar(string name)
    {
        var t = TensorOf(name) ?? throw new KeyNotFoundException($"the match captured no constant '{name}'");
        if (t.ElementCount != 1) throw new InvalidOperationException($"constant '{name}' has {t.ElementCount} elements, not one");
        return t.ToFloat32()[0];
    }

    /// <summary>True when <paramref name="node"/> is one of the matched nodes.</summary>
    public bool Covers(Node node) => _coveredSet.Contains(node);

    /// <summary>
    /// Outputs of matched nodes other than the root that something outside the match reads (a
    /// node not covered, a subgraph, or the graph's outputs). A rewrite that removes the matched
    /// nodes must refuse when this is not empty.
    /// </summary>
    public IReadOnlyList<Value> EscapingValues()
    {
        var result = new List<Value>();
        foreach (var n in _covered)
        {
            if (ReferenceEquals(n, Root)) continue;
            foreach (var o in n.Outputs)
            {
                if (o is null || ReferenceEquals(o, RootValue)) continue;
                if (o.IsGraphOutput || o.Uses.Any(u => !_coveredSet.Contains(u.Node))) result.Add(o);
            }
        }
        return result;
    }

    /// <summary>A one-line summary: root and captures.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"match at {Root?.ToString() ?? RootValue.Name}: " +
            $"{string.Join(", ", _values.Select(kv => $"{kv.Key}={kv.Value.Name}"))}; {_covered.Count} nodes");

    // ------------------------------------------------------------------ binding (with undo)

    internal int Mark() => _trail.Count;

    internal void Undo(int mark)
    {
        for (int i = _trail.Count - 1; i >= mark; i--)
        {
            var (kind, key) = _trail[i];
            switch (kind)
            {
                case Kind.Value: _values.Remove(key!); break;
                case Kind.Node: _nodes.Remove(key!); break;
                case Kind.Tensor: _tensors.Remove(key!); break;
                case Kind.Covered:
                    _coveredSet.Remove(_covered[^1]);
                    _covered.RemoveAt(_covered.Count - 1);
                    break;
            }
        }
        _trail.RemoveRange(mark, _trail.Count - mark);
    }

    /// <summary>Binds <paramref name="name"/> to <paramref name="v"/>, or checks that it is already bound to it.</summary>
    internal bool BindValue(string name, Value v)
    {
        if (_values.TryGetValue(name, out var prev)) return ReferenceEquals(prev, v);
        _values[name] = v;
        _trail.Add((Kind.Value, name));
        return true;
    }

    internal bool BindNode(string name, Node n)
    {
        if (_nodes.TryGetValue(name, out var prev)) return ReferenceEquals(prev, n);
        _nodes[name] = n;
        _trail.Add((Kind.Node, name));
        return true;
    }

    internal void BindTensor(string name, Tensor t)
    {
        if (_tensors.ContainsKey(name)) return;
        _tensors[name] = t;
        _trail.Add((Kind.Tensor, name));
    }

    internal void Cover(Node n)
    {
        if (!_coveredSet.Add(n)) return;
        _covered.Add(n);
        _trail.Add((Kind.Covered, null));
    }
}
