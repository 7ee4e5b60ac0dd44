using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// Recognises a graph's linear layers (<see cref="LinearRules"/>), norms (<see cref="NormRules"/>) and
/// Mamba mixers (<see cref="MambaRules"/>),
/// names them stably (<see cref="LayerNames"/>), and wires them: which norm feeds which linear
/// layers, and which layers share an input (q/k/v, gate/up). Near misses are kept with the reason.
/// </summary>
public static class LayerAnalysis
{
    /// <summary>Analyses the nodes of <paramref name="graph"/> (subgraphs are not searched).</summary>
    public static ModelMap Analyze(Graph graph)
    {
        var map = new ModelMap { Graph = graph, Revision = graph.Model?.Revision ?? -1 };
        var position = new Dictionary<Node, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < graph.Nodes.Count; i++) position[graph.Nodes[i]] = i;

        var normCandidates = new List<(NormRule Rule, Match Match)>();
        var normRefusals = new List<Refusal>();
        var linearRefusals = new List<Refusal>();
        var linearMatches = new List<Match>();
        foreach (var n in graph.Nodes)
        {
            foreach (var rule in NormRules.All)
            {
                if (rule.Rule.RootOps is { } ops && !ops.Contains(n.OpType)) continue;
                var r = rule.Rule.Try(n);
                if (r.Status == MatchStatus.Accepted) normCandidates.Add((rule, r.Match!));
                else if (r.Status == MatchStatus.Refused) normRefusals.Add(new Refusal(rule.Rule.Name, Refusal.Describe(n), r.Reason!, n));
            }
            foreach (var rule in (Rule[])[LinearRules.MatMul, LinearRules.Gemm, LinearRules.Conv, LinearRules.ConvTranspose])
            {
                if (rule.RootOps is { } ops && !ops.Contains(n.OpType)) continue;
                var r = rule.Try(n);
                if (r.Status == MatchStatus.Accepted) linearMatches.Add(r.Match!);
                else if (r.Status == MatchStatus.Refused) linearRefusals.Add(new Refusal(rule.Name, Refusal.Describe(n), r.Reason!, n));
            }
        }

        // Norms: where matches overlap (an RMSNorm-shaped core inside a decomposed LayerNorm, a
        // LayerNorm with and without its β Add), keep the match covering more nodes.
        var normNames = new HashSet<string>(StringComparer.Ordinal);
        var covered = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var kept = new List<(NormRule Rule, Match Match)>();
        foreach (var c in normCandidates.OrderByDescending(c => c.Match.MatchedNodes.Count).ThenBy(c => position[c.Match.Root!]))
        {
            if (covered.Contains(c.Match.Root!)) continue;
            kept.Add(c);
            covered.UnionWith(c.Match.MatchedNodes);
        }
        foreach (var (rule, m) in kept.OrderBy(c => position[c.Match.Root!]))
            map.Norms.Add(rule.Build(m, (gamma, nodes) => LayerNames.Unique(LayerNames.Norm(gamma, nodes), normNames)));
        foreach (var norm in map.Norms) covered.UnionWith(norm.Nodes);
        map.Refusals.AddRange(normRefusals.Where(r => !covered.Contains(r.Node!)));

        // Linear layers, each with the bias Add that follows a MatMul when there is one.
        var linearNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var m in linearMatches)
        {
            var layer = m.Root!.Is("Gemm") ? Gemm(m, linearNames) : m.Root!.Is("Conv") || m.Root!.Is("ConvTranspose") ? Conv(m, linearNames)
                : MatMul(graph, m, linearNames, map.Refusals);
            map.Linears.Add(layer);
        }
        map.Refusals.AddRange(linearRefusals);
        map.Mambas.AddRange(MambaRules.Find(graph, map.Linears.Where(l => l.Conv is null).ToList(), map.Refusals));
        // A Mamba mixer's causal conv1d is the mixer's (lower_mamba), not a Conv layer.
        var mixerConvs = map.Mambas.Select(b => b.Conv).ToHashSet(ReferenceEqualityComparer.Instance);
        map.Linears.RemoveAll(l => l.Conv is not null && mixerConvs.Contains(l.Node));
        map.Ropes.AddRange(RopeRules.Find(graph, map.Refusals));
        var sorted = map.Refusals.OrderBy(r => position[r.Node!]).ToList();   // stable: graph order, then as found
        map.Refusals.Clear();
        map.Refusals.AddRange(sorted);

        Wire(map);
        map.Attention.AddRange(AttentionSite.Find(graph, out var decomposed));
        map.DecomposedAttention.AddRange(decomposed);
        return map;
    }

    private static LinearLayer MatMul(Graph graph, Match m, HashSet<string> names, List<Refusal> refusals)
    {
        var mm = m.Root!;
        var w = m["w"];
        var transposed = LinearRules.TransposedWeight(w);
        var weightUse = transposed is null ? new Use(mm, 1) : new Use(w.Producer!, 0);
        w = transposed ?? w;
        var t = w.Initializer!;
        Node? add = null;
        Value? bias = null;
        var y = mm.Output;
        if (y.Uses.Count == 1 && !y.IsGraphOutput && y.Uses[0].Node is { } user && ReferenceEquals(user.Graph, graph))
        {
            var r = LinearRules.BiasAdd.Try(user, new Dictionary<string, Value>(StringComparer.Ordinal) { ["y"] = y });
            if (r.IsAccepted) { add = user; bias = r.Match!["bias"]; }
            else if (r.Status == MatchStatus.Refused)
                refusals.Add(new Refusal("bias", Refusal.Describe(user), $"not taken as the bias of {Refusal.Describe(mm)}: {r.Reason}",
                user));
        }
        return new LinearLayer
        {
            Name = LayerNames.Unique(transposed is null ? LayerNames.Linear(mm, w) : LayerNames.LinearTransposed(mm, w), names),
            Node = mm,
            BiasAdd = add,
            Input = m["x"],
            Output = add?.Output ?? y,
            Weight = w,
            Bias = bias,
            InFeatures = transposed is null ? t.Dims[0] : t.Dims[1],
            OutFeatures = transposed is null ? t.Dims[1] : t.Dims[0],
            WeightIsOutByIn = transposed is not null,
            WeightUse = weightUse,
        };
    }

    private static LinearLayer Gemm(Match m, HashSet<string> names)
    {
        var gemm = m.Root!;
        var w = m["w"];
        var t = w.Initializer!;
        bool transB = gemm.GetInt("transB", 0) != 0;
        return new LinearLayer
        {
            Name = LayerNames.Unique(LayerNames.Linear(gemm, w), names),
            Node = gemm,
            Input = m["x"],
            Output = gemm.Output,
            Weight = w,
            Bias = gemm.Inputs.Count > 2 ? gemm.Inputs[2] : null,
            InFeatures = transB ? t.Dims[1] : t.Dims[0],
            OutFeatures = transB ? t.Dims[0] : t.Dims[1],
            WeightIsOutByIn = transB,
        };
    }

    private static LinearLayer Conv(Match m, HashSet<string> names)
    {
        var conv = m.Root!;
        var w = m["w"];
        var dims = w.Initializer!.Dims;
        bool transposed = conv.Is("ConvTranspose");   // W [in, out/group, k…]: output channels on axis 1 (within a group)
        long group = conv.GetInt("group", 1);
        long kernel = dims.Skip(2).Aggregate(1L, (a, d) => a * d);
        return new LinearLayer
        {
            Name = LayerNames.Unique(LayerNames.Linear(conv, w), names),
            Node = conv,
            Input = m["x"],
            Output = conv.Output,
            Weight = w,
            Bias = conv.Inputs.Count > 2 ? conv.Inputs[2] : null,
            InFeatures = transposed ? dims[0] / group * kernel : dims[1] * kernel,
            OutFeatures = transposed ? dims[1] * group : dims[0],
            WeightIsOutByIn = !transposed,
            Conv = new ConvInfo(dims.ToArray(), group, transposed),
        };
    }

    /// <summary>Which norm feeds each layer (its output directly, or through one Cast), and which layers share an input.</summary>
    private static void Wire(ModelMap map)
    {
        var byOutput = new Dictionary<Value, NormInfo>(ReferenceEqualityComparer.Instance);
        foreach (var norm in map.Norms) byOutput[norm.Output] = norm;
        foreach (var l in map.Linears)
        {
            if (byOutput.TryGetValue(l.Input, out var norm)) l.FedBy = norm;
            else if (l.Input.Producer is { } cast && cast.Is("Cast") && cast.Inputs[0] is { } ci && byOutput.TryGetValue(ci, out norm))
            {
                l.FedBy = norm;
                l.FedVia = cast;
            }
        }
        foreach (var norm in map.Norms) norm.Feeds = map.Linears.Where(l => ReferenceEquals(l.FedBy, norm)).ToList();

        var groups = new Dictionary<Value, List<LinearLayer>>(ReferenceEqualityComparer.Instance);
        var order = new List<Value>();
        foreach (var l in map.Linears)
        {
            if (!groups.TryGetValue(l.Input, out var list)) { groups[l.Input] = list = []; order.Add(l.Input); }
            list.Add(l);
        }
        foreach (var input in order) map.Groups.Add(new LinearGroup(input, groups[input], groups[input][0].FedBy));
    }
}
