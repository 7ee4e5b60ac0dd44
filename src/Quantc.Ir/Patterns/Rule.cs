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
/// A rule in two small parts, as in onnxscript's rewriter and ONNX Runtime's selector/action split
/// (the action is the caller's): a <see cref="Pattern"/> that selects a subgraph and a
/// <see cref="Check"/> that returns the reason when it refuses a match (null accepts).
/// </summary>
public sealed class Rule
{
    /// <summary>Creates a rule.</summary>
    /// <param name="name">Short name, used in logs and refusals.</param>
    /// <param name="pattern">The subgraph to select, anchored at its root node.</param>
    /// <param name="check">Further conditions; returns the reason for refusing, or null to accept.</param>
    public Rule(string name, Pattern pattern, Func<Match, string?>? check = null)
    {
        Name = name;
        Pattern = pattern;
        Check = check;
    }

    /// <summary>Short name, used in logs and refusals.</summary>
    public string Name { get; }

    /// <summary>The subgraph the rule selects.</summary>
    public Pattern Pattern { get; }

    /// <summary>Returns why a match is refused, or null to accept it.</summary>
    public Func<Match, string?>? Check { get; }

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
