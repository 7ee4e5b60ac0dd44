using System.Globalization;

namespace Quantc.Ir.Layers;

/// <summary>What a successful match captured.</summary>
public sealed class Match
{
    internal readonly Dictionary<string, Value> ValueMap = new(StringComparer.Ordinal);
    internal readonly Dictionary<string, Node> NodeMap = new(StringComparer.Ordinal);
    internal readonly Dictionary<string, Tensor> TensorMap = new(StringComparer.Ordinal);
    internal readonly List<Node> NodeList = [];

    /// <summary>Values captured by name.</summary>
    public IReadOnlyDictionary<string, Value> Values => ValueMap;
    /// <summary>Nodes captured by name.</summary>
    public IReadOnlyDictionary<string, Node> Nodes => NodeMap;
    /// <summary>Constant tensors captured by name.</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors => TensorMap;
    /// <summary>Every node the pattern covered, root first.</summary>
    public IReadOnlyList<Node> Matched => NodeList;

    public Value this[string name] => ValueMap[name];

    internal Match Clone()
    {
        var m = new Match();
        foreach (var kv in ValueMap) m.ValueMap[kv.Key] = kv.Value;
        foreach (var kv in NodeMap) m.NodeMap[kv.Key] = kv.Value;
        foreach (var kv in TensorMap) m.TensorMap[kv.Key] = kv.Value;
        m.NodeList.AddRange(NodeList);
        return m;
    }

    internal void Restore(Match from)
    {
        ValueMap.Clear(); NodeMap.Clear(); TensorMap.Clear(); NodeList.Clear();
        foreach (var kv in from.ValueMap) ValueMap[kv.Key] = kv.Value;
        foreach (var kv in from.NodeMap) NodeMap[kv.Key] = kv.Value;
        foreach (var kv in from.TensorMap) TensorMap[kv.Key] = kv.Value;
        NodeList.AddRange(from.NodeList);
    }
}

/// <summary>
/// A pattern over the dataflow graph, matched backwards from a value (the root's output): it reads
/// like the math, e.g. <c>P.Op("Mul", P.Var("x"), P.Op("Reciprocal", P.Op("Sqrt", ...)))</c>.
/// </summary>
public abstract class Pattern
{
    /// <summary>Tries to match <paramref name="v"/>; on failure the match is left as it was.</summary>
    public abstract bool TryMatch(Value? v, Match m);

    /// <summary>Matches the pattern at <paramref name="root"/>'s first output.</summary>
    public Match? MatchAt(Node root)
    {
        var m = new Match();
        return root.Outputs.Count > 0 && TryMatch(root.Outputs[0], m) ? m : null;
    }

    /// <summary>Matches the pattern at value <paramref name="v"/>.</summary>
    public Match? MatchValue(Value v)
    {
        var m = new Match();
        return TryMatch(v, m) ? m : null;
    }
}

/// <summary>Pattern constructors.</summary>
public static class P
{
    /// <summary>Any value, captured as <paramref name="name"/> (or the same value as an earlier capture of that name).</summary>
    public static Pattern Var(string name) => new VarPattern(name);

    /// <summary>Any value, not captured.</summary>
    public static Pattern Any() => new VarPattern(null);

    /// <summary>A node <paramref name="op"/> (default domain: "" or "ai.onnx") whose inputs match, in order.</summary>
    public static OpPattern Op(string op, params Pattern[] inputs) => new(op, "", inputs);

    /// <summary>A constant: an initializer or the output of a Constant node; captured as a tensor when named.</summary>
    public static Pattern Const(string? name = null, Func<Tensor, bool>? check = null) => new ConstPattern(name, check);

    /// <summary>A constant holding one value (any shape with one element) equal to <paramref name="value"/> within <paramref name="tolerance"/>.</summary>
    public static Pattern Scalar(float value, float tolerance = 1e-6f, string? name = null) =>
        new ConstPattern(name, t => t.ElementCount == 1 && IsNumeric(t) && Math.Abs(t.ToFloat32()[0] - value) <= tolerance);

    /// <summary>A constant with a single element, captured as <paramref name="name"/>.</summary>
    public static Pattern AnyScalar(string name) => new ConstPattern(name, t => t.ElementCount == 1 && IsNumeric(t));

    /// <summary><paramref name="op"/>(inner) or inner itself (e.g. an optional Cast).</summary>
    public static Pattern Optional(string op, Pattern inner) => new OptionalPattern(op, inner);

    /// <summary>The first alternative that matches.</summary>
    public static Pattern OneOf(params Pattern[] alternatives) => new OneOfPattern(alternatives);

    private static bool IsNumeric(Tensor t) => t.DataType is not (0 or 8 or 14 or 15);

    private sealed class VarPattern(string? name) : Pattern
    {
        public override bool TryMatch(Value? v, Match m)
        {
            if (v is null) return false;
            if (name is null) return true;
            if (m.ValueMap.TryGetValue(name, out var prev)) return ReferenceEquals(prev, v);
            m.ValueMap[name] = v;
            return true;
        }
    }

    private sealed class ConstPattern(string? name, Func<Tensor, bool>? check) : Pattern
    {
        public override bool TryMatch(Value? v, Match m)
        {
            if (v is null) return false;
            Tensor? t = v.Initializer ?? (v.Producer is { } p && p.Is("Constant") ? p.GetTensor("value") : null);
            if (t is null || (check is not null && !check(t))) return false;
            if (name is not null)
            {
                if (m.ValueMap.TryGetValue(name, out var prev) && !ReferenceEquals(prev, v)) return false;
                m.ValueMap[name] = v;
                m.TensorMap[name] = t;
            }
            return true;
        }
    }

    private sealed class OptionalPattern(string op, Pattern inner) : Pattern
    {
        public override bool TryMatch(Value? v, Match m)
        {
            if (v?.Producer is { } p && p.Is(op) && p.Inputs.Count >= 1)
            {
                var saved = m.Clone();
                m.NodeList.Add(p);
                if (inner.TryMatch(p.Inputs[0], m)) return true;
                m.Restore(saved);
            }
            return inner.TryMatch(v, m);
        }
    }

    private sealed class OneOfPattern(Pattern[] alternatives) : Pattern
    {
        public override bool TryMatch(Value? v, Match m)
        {
            var saved = m.Clone();
            foreach (var a in alternatives)
            {
                if (a.TryMatch(v, m)) return true;
                m.Restore(saved);
            }
            return false;
        }
    }
}

/// <summary>A node pattern; refine with <see cref="In"/>, <see cref="Commutative"/>, <see cref="As"/>, <see cref="Where"/>.</summary>
public sealed class OpPattern(string op, string domain, Pattern[] inputs) : Pattern
{
    private string _domain = domain;
    private bool _commutative;
    private bool _singleUse;
    private string? _capture;
    private Func<Node, bool>? _check;

    /// <summary>The operator's domain.</summary>
    public OpPattern In(string domain) { _domain = domain; return this; }
    /// <summary>The two inputs may come in either order (Add, Mul).</summary>
    public OpPattern Commutative() { _commutative = true; return this; }
    /// <summary>The node's output must have no other consumer (safe to rewrite).</summary>
    public OpPattern SingleUse() { _singleUse = true; return this; }
    /// <summary>Captures the node as <paramref name="name"/>.</summary>
    public OpPattern As(string name) { _capture = name; return this; }
    /// <summary>An extra condition on the node (attributes...); several conditions must all hold.</summary>
    public OpPattern Where(Func<Node, bool> check)
    {
        var previous = _check;
        _check = previous is null ? check : n => previous(n) && check(n);
        return this;
    }

    public override bool TryMatch(Value? v, Match m)
    {
        if (v?.Producer is not { } n || !n.Is(op, _domain)) return false;
        if (_singleUse && (v.Uses.Count != 1 || v.IsGraphOutput)) return false;
        if (n.Inputs.Count < inputs.Length) return false;
        if (_check is not null && !_check(n)) return false;
        var saved = m.Clone();
        if (Inputs(n, m, swap: false)) return Capture(n, m);
        m.Restore(saved);
        if (_commutative && inputs.Length == 2 && Inputs(n, m, swap: true)) return Capture(n, m);
        m.Restore(saved);
        return false;
    }

    private bool Inputs(Node n, Match m, bool swap)
    {
        for (int i = 0; i < inputs.Length; i++)
            if (!inputs[i].TryMatch(n.Inputs[swap ? 1 - i : i], m)) return false;
        return true;
    }

    private bool Capture(Node n, Match m)
    {
        m.NodeList.Insert(0, n);
        if (_capture is not null)
        {
            if (m.NodeMap.TryGetValue(_capture, out var prev) && !ReferenceEquals(prev, n)) return false;
            m.NodeMap[_capture] = n;
        }
        return true;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{op}({inputs.Length} inputs)");
}
