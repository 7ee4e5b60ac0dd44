namespace Quantc.Ir.Patterns;

/// <summary>One applied rewrite: which rule, where, what it covered and what replaced the root's output.</summary>
/// <param name="Rule">The rule's name.</param>
/// <param name="Root">The root node, described as in refusals (<c>Mul 'n'</c>).</param>
/// <param name="Nodes">Names (or descriptions) of the matched nodes, root first.</param>
/// <param name="Replacement">The value that replaced the root's output, when the rewrite returned one.</param>
public sealed record AppliedRewrite(string Rule, string Root, IReadOnlyList<string> Nodes, string? Replacement);

/// <summary>What a <see cref="PatternRewriter"/> run selected, applied and refused.</summary>
public sealed class RewriteLog
{
    /// <summary>Accepted matches of rules without a rewrite (selectors), in graph order.</summary>
    public List<(Rule Rule, Match Match)> Selected { get; } = [];

    /// <summary>Rewrites applied, in order.</summary>
    public List<AppliedRewrite> Applied { get; } = [];

    /// <summary>Matches the checks refused, with their reasons (each rule and node once).</summary>
    public List<Refusal> Refusals { get; } = [];

    /// <summary>Sweeps over the graph until nothing changed (or the limit).</summary>
    public int Iterations { get; internal set; }

    /// <summary>How many times rule <paramref name="rule"/> was applied.</summary>
    public int AppliedCount(string rule) => Applied.Count(a => a.Rule == rule);
}

/// <summary>
/// Applies rules over a graph, in the manner of MLIR's greedy pattern driver: sweep the nodes in
/// order, try each rule at each node (dispatching on the root op type), act on accepted matches,
/// and sweep again until a sweep changes nothing. Refusals are kept with their reasons. The graph
/// is verified (<see cref="Graph.Validate"/>) after the run, and after every rewrite when asked.
/// </summary>
public sealed class PatternRewriter
{
    private readonly Rule[] _rules;

    /// <summary>A driver over <paramref name="rules"/>; at a node, earlier rules are tried first.</summary>
    public PatternRewriter(params IEnumerable<Rule> rules) => _rules = rules.ToArray();

    /// <summary>The rules, in priority order.</summary>
    public IReadOnlyList<Rule> Rules => _rules;

    /// <summary>Most sweeps before giving up on reaching a fixed point (default 10).</summary>
    public int MaxIterations { get; init; } = 10;

    /// <summary>Validate the graph after every single rewrite (slow on big graphs; for debugging rules).</summary>
    public bool VerifyEachRewrite { get; init; }

    /// <summary>Also visit the subgraphs of If/Loop/Scan nodes.</summary>
    public bool IncludeSubgraphs { get; init; }

    /// <summary>Matches and checks every rule at every node without changing anything.</summary>
    public RewriteLog Select(Graph graph)
    {
        var log = new RewriteLog { Iterations = 1 };
        foreach (var g in Graphs(graph))
            foreach (var n in g.Nodes)
                foreach (var rule in _rules)
                {
                    if (!Dispatches(rule, n)) continue;
                    var r = rule.Try(n);
                    if (r.Status == MatchStatus.Refused) log.Refusals.Add(new Refusal(rule.Name, Refusal.Describe(n), r.Reason!, n));
                    else if (r.Status == MatchStatus.Accepted) log.Selected.Add((rule, r.Match!));
                }
        return log;
    }

    /// <summary>Applies the rules until a fixed point; rules without a rewrite only select.</summary>
    public RewriteLog Run(Graph graph)
    {
        var log = new RewriteLog();
        var reported = new HashSet<(Rule, Node)>();
        for (int iter = 0; iter < MaxIterations; iter++)
        {
            log.Iterations = iter + 1;
            bool changed = false;
            foreach (var g in Graphs(graph).ToList())
            {
                var removed = new HashSet<Node>(ReferenceEqualityComparer.Instance);
                foreach (var n in g.Nodes.ToList())
                {
                    if (removed.Contains(n)) continue;
                    foreach (var rule in _rules)
                    {
                        if (!Dispatches(rule, n)) continue;
                        var r = rule.Try(n);
                        if (r.Status == MatchStatus.NoMatch) continue;
                        if (r.Status == MatchStatus.Refused)
                        {
                            if (reported.Add((rule, n))) log.Refusals.Add(new Refusal(rule.Name, Refusal.Describe(n), r.Reason!, n));
                            continue;
                        }
                        if (rule.Rewrite is null)
                        {
                            if (reported.Add((rule, n))) log.Selected.Add((rule, r.Match!));
                            continue;
                        }
                        log.Applied.Add(Apply(g, rule, r.Match!, removed));
                        changed = true;
                        if (VerifyEachRewrite) Verify(graph, rule);
                        break;   // the root may be gone; later rules see it on the next sweep
                    }
                }
            }
            if (!changed) break;
        }
        if (log.Applied.Count > 0) Verify(graph, null);
        return log;
    }

    private IEnumerable<Graph> Graphs(Graph graph) => IncludeSubgraphs ? graph.AllGraphs() : [graph];

    private static bool Dispatches(Rule rule, Node n) => rule.RootOps is not { } ops || ops.Contains(n.OpType);

    private static AppliedRewrite Apply(Graph g, Rule rule, Match m, HashSet<Node> removed)
    {
        var nodeNames = m.MatchedNodes.Select(x => x.Name.Length > 0 ? x.Name : Refusal.Describe(x)).ToList();
        string root = m.Root is { } r ? Refusal.Describe(r) : m.RootValue.Name;
        var replacement = rule.Rewrite!(new RewriteContext(g, m, rule));
        if (replacement is not null && !ReferenceEquals(replacement, m.RootValue))
            g.ReplaceAllUses(m.RootValue, replacement, includeGraphOutputs: true);
        // Matched nodes the rewrite left without readers go (repeat: removing one frees its inputs' producers).
        for (bool again = true; again;)
        {
            again = false;
            foreach (var n in m.MatchedNodes)
            {
                if (removed.Contains(n) || !ReferenceEquals(n.Graph, g) || n.Outputs.Count == 0) continue;
                if (n.Outputs.Any(o => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput))) continue;
                g.RemoveNode(n);
                removed.Add(n);
                again = true;
            }
        }
        return new AppliedRewrite(rule.Name, root, nodeNames, replacement?.Name);
    }

    private static void Verify(Graph graph, Rule? rule)
    {
        var problems = graph.FindProblems();
        if (problems.Count == 0) return;
        if (rule is not null) problems.Insert(0, $"after rule '{rule.Name}'");
        throw new GraphValidationException(problems);
    }
}
