using System.Globalization;

namespace Quantc.Ir.Patterns;

/// <summary>
/// A declarative pattern over the dataflow graph, matched backwards from a value (a root node's
/// output) through producers' inputs. Build patterns with <see cref="P"/> so that they read like
/// the math:
/// <code>
/// P.Op("Mul", P.Var("x"), P.Op("Reciprocal", P.Op("Sqrt", P.Op("Add",
///     P.Op("ReduceMean", P.Op("Pow", P.Same("x"), P.Const(2f))), P.Const("eps")))))
/// </code>
/// Matching backtracks fully: a choice made early (which input order of a commutative op, whether
/// an optional node is there, which alternative of <see cref="P.OneOf"/>) is revisited when a
/// later constraint (such as <see cref="P.Same"/>) fails. Patterns are immutable once built and may
/// be shared between patterns and threads.
/// </summary>
public abstract class Pattern
{
    private protected Pattern() { }

    /// <summary>
    /// Matches <paramref name="v"/>, then calls <paramref name="next"/> (the rest of the match). On
    /// failure of either, every binding made here is undone and false is returned.
    /// </summary>
    internal abstract bool Match(Value? v, Match m, Func<bool> next);

    /// <summary>The op types the matched value's producer can have, or null when it can be anything.</summary>
    internal virtual IReadOnlyCollection<string>? RootOps => null;

    /// <summary>Which output of the root node the pattern describes.</summary>
    internal virtual int RootOutput => 0;

    /// <summary>
    /// Matches the pattern anchored at <paramref name="root"/> (at its first output, or the output
    /// the pattern names with <see cref="OpPattern.Output"/>). <paramref name="bindings"/> pre-binds
    /// captures, e.g. to look for a bias Add of a value already known.
    /// </summary>
    public Match? MatchAt(Node root, IReadOnlyDictionary<string, Value>? bindings = null)
    {
        int i = RootOutput;
        if (i >= root.Outputs.Count || root.Outputs[i] is not { } v) return null;
        if (RootOps is { } ops && !ops.Contains(root.OpType)) return null;
        return MatchValue(v, bindings);
    }

    /// <summary>Matches the pattern at value <paramref name="v"/>.</summary>
    public Match? MatchValue(Value v, IReadOnlyDictionary<string, Value>? bindings = null)
    {
        var m = new Match(v);
        if (bindings is not null)
            foreach (var kv in bindings) m.BindValue(kv.Key, kv.Value);
        return Match(v, m, static () => true) ? m : null;
    }

    /// <summary>This pattern, with the value it matches also captured as <paramref name="name"/>.</summary>
    public Pattern Named(string name) => new NamedPattern(name, this);

    /// <summary>The pattern as text, e.g. <c>Mul(x, Reciprocal(Sqrt(...)))</c>.</summary>
    public abstract override string ToString();

    private sealed class NamedPattern(string name, Pattern inner) : Pattern
    {
        internal override IReadOnlyCollection<string>? RootOps => inner.RootOps;
        internal override int RootOutput => inner.RootOutput;

        internal override bool Match(Value? v, Match m, Func<bool> next)
        {
            if (v is null) return false;
            int mark = m.Mark();
            if (m.BindValue(name, v) && inner.Match(v, m, next)) return true;
            m.Undo(mark);
            return false;
        }

        public override string ToString() => $"{name}:{inner}";
    }
}

/// <summary>Pattern constructors; see <see cref="Pattern"/>.</summary>
public static class P
{
    /// <summary>Any value, captured as <paramref name="name"/>. A second occurrence of the name must be the same value.</summary>
    public static Pattern Var(string name) => new ValuePattern(name, null, name);

    /// <summary>Any value satisfying <paramref name="predicate"/>, captured as <paramref name="name"/>.</summary>
    public static Pattern Var(string name, Func<Value, bool> predicate) => new ValuePattern(name, predicate, name);

    /// <summary>
    /// The same value as the capture <paramref name="name"/> (the x of <c>Pow(x, 2)</c> that the
    /// norm also multiplies). Order does not matter: whichever occurrence is matched first captures.
    /// </summary>
    public static Pattern Same(string name) => new ValuePattern(name, null, "=" + name);

    /// <summary>Any value (not captured).</summary>
    public static Pattern Any() => new ValuePattern(null, null, "_");

    /// <summary>Any value satisfying <paramref name="predicate"/> (not captured).</summary>
    public static Pattern Any(Func<Value, bool> predicate) => new ValuePattern(null, predicate, "_?");

    /// <summary>
    /// A node <paramref name="op"/> of the default domain ("" or "ai.onnx"; change with
    /// <see cref="OpPattern.In"/>) whose first inputs match <paramref name="inputs"/> in order
    /// (further inputs are not constrained).
    /// </summary>
    public static OpPattern Op(string op, params Pattern[] inputs) => new(op, inputs);

    /// <summary>Any constant: an initializer or the output of a Constant node.</summary>
    public static Pattern Const() => new ConstPattern(null, null, false, "const");

    /// <summary>A constant, captured as <paramref name="name"/> (its value, and its tensor in <see cref="Match.Tensors"/>).</summary>
    public static Pattern Const(string name) => new ConstPattern(name, null, false, name);

    /// <summary>A constant whose tensor satisfies <paramref name="check"/>, captured as <paramref name="name"/> when one is
    /// given.</summary>
    public static Pattern Const(string? name, Func<Tensor, bool> check) => new ConstPattern(name, check, false, name ?? "const?");

    /// <summary>A constant with one element (any shape) equal to <paramref name="value"/> within <paramref name="tolerance"/>.</summary>
    public static Pattern Const(float value, float tolerance = 1e-6f) =>
        new ConstPattern(null, t => IsScalar(t, value, tolerance), false, value.ToString(CultureInfo.InvariantCulture));

    /// <summary>A constant with a single numeric element, captured as <paramref name="name"/>.</summary>
    public static Pattern Scalar(string name) =>
        new ConstPattern(name, t => t.ElementCount == 1 && Constants.IsNumeric(t), false, name);

    /// <summary>An initializer (not a Constant node), captured as <paramref name="name"/> when one is given.</summary>
    public static Pattern Initializer(string? name = null) => new ConstPattern(name, null, true, name ?? "init");

    /// <summary>
    /// <paramref name="op"/> if it is there, else its input <paramref name="through"/> (an index into
    /// <paramref name="op"/>'s input patterns): an optional Cast, an optional <c>Add(y, bias)</c>.
    /// </summary>
    public static Pattern Optional(OpPattern op, int through = 0)
    {
        if (through < 0 || through >= op.Inputs.Count)
            throw new ArgumentOutOfRangeException(nameof(through), $"{op} has no input pattern {through}");
        return new OptionalPattern(op, op.Inputs[through]);
    }

    /// <summary>Alternatives, tried in order (and each revisited on backtracking).</summary>
    public static Pattern OneOf(params Pattern[] alternatives) => new OneOfPattern(alternatives);

    private static bool IsScalar(Tensor t, float value, float tolerance) =>
        t.ElementCount == 1 && Constants.IsNumeric(t) && Math.Abs(t.ToFloat32()[0] - value) <= tolerance;

    private sealed class ValuePattern(string? name, Func<Value, bool>? predicate, string text) : Pattern
    {
        internal override bool Match(Value? v, Match m, Func<bool> next)
        {
            if (v is null || (predicate is not null && !predicate(v))) return false;
            if (name is null) return next();
            int mark = m.Mark();
            if (m.BindValue(name, v) && next()) return true;
            m.Undo(mark);
            return false;
        }

        public override string ToString() => text;
    }

    private sealed class ConstPattern(string? name, Func<Tensor, bool>? check, bool initializerOnly, string text) : Pattern
    {
        internal override bool Match(Value? v, Match m, Func<bool> next)
        {
            if (v is null) return false;
            var t = initializerOnly ? v.Initializer : Constants.Of(v);
            if (t is null || (check is not null && !check(t))) return false;
            int mark = m.Mark();
            if (name is not null)
            {
                if (!m.BindValue(name, v)) return false;
                m.BindTensor(name, t);
            }
            if (v.Producer is { } constant) m.Cover(constant);
            if (next()) return true;
            m.Undo(mark);
            return false;
        }

        public override string ToString() => text;
    }

    private sealed class OptionalPattern(OpPattern op, Pattern through) : Pattern
    {
        private readonly IReadOnlyCollection<string>? _rootOps =
            through.RootOps is { } t ? new HashSet<string>(t.Append(op.OpType), StringComparer.Ordinal) : null;

        internal override IReadOnlyCollection<string>? RootOps => _rootOps;

        internal override int RootOutput => op.RootOutput;

        internal override bool Match(Value? v, Match m, Func<bool> next) => op.Match(v, m, next) || through.Match(v, m, next);

        public override string ToString() => $"[{op}]";
    }

    private sealed class OneOfPattern(Pattern[] alternatives) : Pattern
    {
        private readonly IReadOnlyCollection<string>? _rootOps = UnionOfRootOps(alternatives);

        internal override IReadOnlyCollection<string>? RootOps => _rootOps;

        private static HashSet<string>? UnionOfRootOps(Pattern[] alternatives)
        {
            var ops = new HashSet<string>(StringComparer.Ordinal);
            foreach (var a in alternatives)
            {
                if (a.RootOps is not { } r) return null;
                ops.UnionWith(r);
            }
            return ops;
        }

        internal override bool Match(Value? v, Match m, Func<bool> next)
        {
            foreach (var a in alternatives)
                if (a.Match(v, m, next)) return true;
            return false;
        }

        public override string ToString() => $"OneOf({string.Join(" | ", alternatives.Select(a => a.ToString()))})";
    }
}

/// <summary>
/// A node pattern: op type and domain, input patterns, and refinements — <see cref="In"/>,
/// <see cref="Commutative"/>, <see cref="SingleUse"/>, <see cref="As"/>, <see cref="Where"/>,
/// <see cref="Output"/>. Refinements return the same object; finish building before sharing it.
/// </summary>
public sealed class OpPattern : Pattern
{
    private readonly string _op;
    private readonly Pattern[] _inputs;
    private string[] _domains = [""];
    private bool _commutative;
    private bool _singleUse;
    private string? _capture;
    private Func<Node, bool>? _where;
    private int _output;

    internal OpPattern(string op, Pattern[] inputs)
    {
        _op = op;
        _inputs = inputs;
        _rootOps = [op];
    }

    private readonly string[] _rootOps;

    /// <summary>The op type.</summary>
    public string OpType => _op;

    /// <summary>The input patterns, in order.</summary>
    public IReadOnlyList<Pattern> Inputs => _inputs;

    internal override IReadOnlyCollection<string>? RootOps => _rootOps;
    internal override int RootOutput => _output;

    /// <summary>The op's domain, or several accepted domains ("" stands for the default domain, also spelled "ai.onnx").</summary>
    public OpPattern In(params string[] domains)
    {
        if (domains.Length == 0) throw new ArgumentException("give at least one domain", nameof(domains));
        _domains = domains;
        return this;
    }

    /// <summary>The first two inputs may come in either order (Add, Mul).</summary>
    public OpPattern Commutative()
    {
        if (_inputs.Length != 2) throw new InvalidOperationException($"{_op}: only a two-input pattern can be commutative");
        _commutative = true;
        return this;
    }

    /// <summary>The matched output must have exactly one consumer and not be a graph output (so that a rewrite may remove the
    /// node).</summary>
    public OpPattern SingleUse()
    {
        _singleUse = true;
        return this;
    }

    /// <summary>Captures the node as <paramref name="name"/> (in <see cref="Match.Nodes"/>).</summary>
    public OpPattern As(string name)
    {
        _capture = name;
        return this;
    }

    /// <summary>An extra condition on the node (attributes, input count); several conditions must all hold.</summary>
    public OpPattern Where(Func<Node, bool> predicate)
    {
        var previous = _where;
        _where = previous is null ? predicate : n => previous(n) && predicate(n);
        return this;
    }

    /// <summary>The pattern describes output <paramref name="index"/> of the node (default 0).</summary>
    public OpPattern Output(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        _output = index;
        return this;
    }

    private bool DomainMatches(Node n)
    {
        foreach (var d in _domains)
            if (n.Is(_op, d)) return true;
        return false;
    }

    internal override bool Match(Value? v, Match m, Func<bool> next)
    {
        if (v?.Producer is not { } n || v.ProducerOutputIndex != _output || !DomainMatches(n)) return false;
        if (_singleUse && (v.Uses.Count != 1 || v.IsGraphOutput)) return false;
        if (n.Inputs.Count < _inputs.Length) return false;
        if (_where is not null && !_where(n)) return false;
        int mark = m.Mark();
        m.Cover(n);
        if (_capture is not null && !m.BindNode(_capture, n)) { m.Undo(mark); return false; }
        if (MatchInputs(n, m, 0, swap: false, next)) return true;
        if (_commutative && MatchInputs(n, m, 0, swap: true, next)) return true;
        m.Undo(mark);
        return false;
    }

    private bool MatchInputs(Node n, Match m, int i, bool swap, Func<bool> next)
    {
        if (i == _inputs.Length) return next();
        int nodeInput = swap && i < 2 ? 1 - i : i;
        return _inputs[i].Match(n.Inputs[nodeInput], m, () => MatchInputs(n, m, i + 1, swap, next));
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        string domain = _domains is [""] ? "" : $"{string.Join("|", _domains)}.";
        return $"{domain}{_op}({string.Join(", ", _inputs.Select(p => p.ToString()))}){(_capture is null ? "" : $" as {_capture}")}";
    }
}
