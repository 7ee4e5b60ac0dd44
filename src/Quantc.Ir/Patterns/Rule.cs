namespace Quantc.Ir.Patterns;

/// <summary>Why a rule (or an analysis) passed over a structural match: what it looked at and the reason.</summary>
/// <param name="Rule">The rule that refused.</param>
/// <param name="Subject">What was refused, e.g. <c>MatMul 'mm'</c>.</param>
/// <param name="Reason">Why, e.g. <c>second input 'w' is a graph input, not an initializer</c>.</param>
/// <param name="Node">The node the match was anchored at, when there is one.</param>
public sealed record Refusal(string Rule, string Subject, string Reason, Node? Node = null)
{
    /// <summary>"Subject: reason".</summary>
    public override string ToString() => $"{Subject}: {Reason}";

    /// <summary>How a node is named in refusals: <c>MatMul 'name'</c> (or the op and its first output when the node has no name).</summary>
    public static string Describe(Node n) =>
        n.Name.Length > 0 ? $"{n.OpType} '{n.Name}'" : $"{n.OpType} → '{n.Outputs.FirstOrDefault()?.Name}'";
}

/// <summary>What <see cref="Rule.Try"/> found at a node.</summary>
public enum MatchStatus
{
    /// <summary>The pattern does not match.</summary>
    NoMatch,
    /// <summary>The pattern matches but the check gave a reason to leave it alone.</summary>
    Refused,
    /// <summary>The pattern matches and the check accepts it.</summary>
    Accepted,
}

/// <summary>The outcome of trying a rule at one node.</summary>
/// <param name="Status">No match, refused or accepted.</param>
/// <param name="Match">The match (null when there is none).</param>
/// <param name="Reason">The check's reason when refused.</param>
public readonly record struct RuleResult(MatchStatus Status, Match? Match, string? Reason)
{
    /// <summary>True when the pattern matched and the check accepted.</summary>
    public bool IsAccepted => Status == MatchStatus.Accepted;
}

/// <summary>
/// What a rewrite may use: the graph, the match, and helpers that insert new nodes before the
/// root (so that the graph stays in topological order).
/// </summary>
public sealed class RewriteContext
{
    internal RewriteContext(Graph graph, Match match, Rule rule)
    {
        Graph = graph;
        Match = match;
        Rule = rule;
    }

    /// <summary>The graph being rewritten.</summary>
    public Graph Graph { get; }

    /// <summary>The accepted match.</summary>
    public Match Match { get; }

    /// <summary>The rule being applied.</summary>
    public Rule Rule { get; }

    /// <summary>
    /// Adds a node right before the match's root; its name is made unique from <paramref name="name"/>
    /// (default: rule name and op), its outputs are named <paramref name="outputNames"/> or made up.
    /// </summary>
    public Node AddNode(string opType, IEnumerable<Value?> inputs, int outputCount = 1, string domain = "", string? name = null, IEnumerable<string>? outputNames = null) =>
        Graph.AddNode(opType, inputs, outputCount, domain, Graph.UniqueName(name ?? $"{Rule.Name}/{opType}"), outputNames,
            before: Match.Root is { } r && ReferenceEquals(r.Graph, Graph) ? r : null);

    /// <summary>
    /// Frees the root output's name for the replacement (the old value is renamed) and returns it: pass
    /// it as the replacement node's output name so that graph outputs and later references keep it.
    /// </summary>
    public string TakeRootName()
    {
        string name = Match.RootValue.Name;
        Graph.RenameValueUnique(Match.RootValue, name + "_replaced");
        return name;
    }

    /// <summary>Adds an initializer (name made unique from the tensor's).</summary>
    public Value AddInitializer(Tensor tensor) => Graph.AddInitializer(tensor);
}

/// <summary>
/// A rule in three small parts, as in onnxscript's rewriter and ONNX Runtime's selector/action
/// split: a <see cref="Pattern"/> that selects a subgraph, a <see cref="Check"/> that returns the
/// reason when it refuses a match (null accepts), and an optional <see cref="Rewrite"/> that acts
/// on an accepted match. A rule without a rewrite is a pure selector (layer analysis uses those).
/// </summary>
public sealed class Rule
{
    /// <summary>Creates a rule.</summary>
    /// <param name="name">Short name, used in logs and refusals.</param>
    /// <param name="pattern">The subgraph to select, anchored at its root node.</param>
    /// <param name="check">Further conditions; returns the reason for refusing, or null to accept.</param>
    /// <param name="rewrite">
    /// The action. It returns the value that replaces the root's output (the driver then points every
    /// use, graph outputs included, at it and removes matched nodes left unused), or null when it did
    /// all the rewiring itself. A graph output re-pointed this way takes the replacement's name; a
    /// rewrite that must keep the name gives its new node <see cref="RewriteContext.TakeRootName"/>.
    /// </param>
    public Rule(string name, Pattern pattern, Func<Match, string?>? check = null, Func<RewriteContext, Value?>? rewrite = null)
    {
        Name = name;
        Pattern = pattern;
        Check = check;
        Rewrite = rewrite;
    }

    /// <summary>Short name, used in logs and refusals.</summary>
    public string Name { get; }

    /// <summary>The subgraph the rule selects.</summary>
    public Pattern Pattern { get; }

    /// <summary>Returns why a match is refused, or null to accept it.</summary>
    public Func<Match, string?>? Check { get; }

    /// <summary>The action on an accepted match (null: a pure selector).</summary>
    public Func<RewriteContext, Value?>? Rewrite { get; }

    /// <summary>The op types this rule's root can have (null: any), for quick dispatch.</summary>
    public IReadOnlyCollection<string>? RootOps => Pattern.RootOps;

    /// <summary>Matches at <paramref name="root"/> and runs the check.</summary>
    public RuleResult Try(Node root, IReadOnlyDictionary<string, Value>? bindings = null)
    {
        if (Pattern.MatchAt(root, bindings) is not { } m) return new RuleResult(MatchStatus.NoMatch, null, null);
        string? reason = Check?.Invoke(m);
        return reason is null ? new RuleResult(MatchStatus.Accepted, m, null) : new RuleResult(MatchStatus.Refused, m, reason);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {Pattern}";
}
