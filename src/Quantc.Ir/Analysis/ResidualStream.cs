using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>The residual stream of a pre-norm transformer, from its embedding: who writes it, which norms read it, which layers read the
/// norms.</summary>
public sealed class ResidualStream
{
    public required Node Embedding { get; init; }
    public required long Hidden { get; init; }
    public List<LinearLayer> Writers { get; } = [];
    public List<LinearLayer> Readers { get; } = [];
    public List<NormInfo> Norms { get; } = [];
    public List<Value> SkipBiases { get; } = [];

    /// <summary>The residual stream's own values (the embedding's output and every sum along it).</summary>
    public List<Value> Residual { get; } = [];

    /// <summary>Every value carried in the rotated basis: the stream itself, the norms' outputs and the writers' outputs.</summary>
    public List<Value> RotatedValues { get; } = [];

    /// <summary>
    /// Walks the stream from the embedding; null with the reason when something reads it other than a norm, an Add of a
    /// linear layer's output or the next sum, or when <paramref name="acceptNorm"/> refuses a norm on it (checked as the walk
    /// reaches it, so the first problem on the way is the one reported).
    /// </summary>
    internal static ResidualStream? Find(Graph g, ModelMap map, Func<NormInfo, string?>? acceptNorm, out string? why)
    {
        why = null;
        try { return Walk(g, map, acceptNorm); }
        catch (NotAStream e) { why = e.Message; return null; }
    }

    private sealed class NotAStream(string why) : Exception(why);

    private static ResidualStream Walk(Graph g, ModelMap map, Func<NormInfo, string?>? acceptNorm)
    {
        static Exception Refuse(string why) => new NotAStream(why);
        var normOf = new Dictionary<Node, NormInfo>(ReferenceEqualityComparer.Instance);
        foreach (var n in map.Norms) foreach (var node in n.Nodes) normOf[node] = n;
        bool FeedsNorm(Value v) =>
            v.Uses.Any(u => normOf.TryGetValue(u.Node, out var n) && (ReferenceEquals(n.Input, v) || ReferenceEquals(n.Skip, v)));

        var embeddings = g.Nodes.Where(n => n.Is("Gather") && n.GetInt("axis", 0) == 0 && n.Inputs[0]?.Initializer is { Dims.Length: 2 } &&
            FeedsNorm(n.Output)).ToList();
        if (embeddings.Count == 0)
            throw Refuse("no embedding found: a Gather on a [vocab, hidden] initializer whose output feeds an RMSNorm directly (LLaMA- " +
            "or Mamba-style pre-norm models; learned position embeddings and LayerNorm are not handled)");
        if (embeddings.Count > 1)
            throw Refuse($"{embeddings.Count} embedding-like Gathers feed norms ({string.Join(", ", embeddings.Select(n => n.Name))}); " +
                $"only one token embedding is handled");
        var embedding = embeddings[0];
        var table = embedding.Inputs[0]!;
        long d = table.Initializer!.Dims[1];
        if (table.Initializer.DataType != (int)Onnx.Proto.TensorProto.Types.DataType.Float)
            throw Refuse($"the embedding '{table.Name}' is not float32");
        var s = new ResidualStream { Embedding = embedding, Hidden = d };

        var residual = new HashSet<Value>(ReferenceEqualityComparer.Instance) { embedding.Output };
        var queue = new Queue<Value>([embedding.Output]);
        var normed = new List<Value>();
        var adds = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var byOutput = map.Linears.ToDictionary(l => l.Output, l => l, (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance);

        void Join(Value other, Node at)
        {
            if (residual.Contains(other)) return;
            if (!byOutput.TryGetValue(other, out var w))
                throw Refuse($"'{other.Name}' is added to the residual stream at {at.OpType} '{at.Name}' but is neither the stream nor " +
                    $"the output of a linear layer");
            if (other.Uses.Count != 1 || other.IsGraphOutput)
                throw Refuse($"{w.Name} writes the residual stream but its output is also used elsewhere");
            if (w.OutFeatures != d) throw Refuse($"{w.Name} writes {w.OutFeatures} features into a residual stream of {d}");
            if (w.Weight.Uses.Count != 1) throw Refuse($"{w.Name}'s weight is shared");
            s.Writers.Add(w);
        }

        while (queue.Count > 0)
        {
            var v = queue.Dequeue();
            if (v.IsGraphOutput) throw Refuse($"residual value '{v.Name}' is a graph output (it would come out rotated)");
            foreach (var use in v.Uses)
            {
                var node = use.Node;
                if (normOf.TryGetValue(node, out var norm))
                {
                    if (!ReferenceEquals(norm.Input, v) && !ReferenceEquals(norm.Skip, v))
                        throw Refuse($"residual value '{v.Name}' enters the norm {norm.Name} other than as its input");
                    if (s.Norms.Contains(norm)) continue;    // reached from its other input already
                    if (norm.HiddenSize != d) throw Refuse($"{norm.Name} normalises {norm.HiddenSize} channels of a {d}-wide stream");
                    if (acceptNorm?.Invoke(norm) is { } refused) throw Refuse(refused);
                    s.Norms.Add(norm);
                    if (norm.Skip is { } skip) Join(ReferenceEquals(norm.Input, v) ? skip : norm.Input, norm.OutputNode);
                    var fused = norm.OutputNode;
                    if (norm.Skip is not null && fused.Inputs.Count > 3 && fused.Inputs[3] is { } bias)
                    {
                        if (bias.Initializer is null || bias.Uses.Count != 1)
                            throw Refuse($"the bias of {norm.Name} is not an initializer of its own");
                        s.SkipBiases.Add(bias);
                    }
                    normed.Add(norm.Output);
                    if (norm.Skip is not null && fused.Outputs.Count > 3 && fused.Outputs[3] is { } sum && residual.Add(sum))
                        queue.Enqueue(sum);
                    continue;
                }
                if (node.Is("Add") && node.Inputs.Count == 2)
                {
                    if (!adds.Add(node)) continue;
                    Join(node.Inputs[1 - use.InputIndex]!, node);
                    if (residual.Add(node.Output)) queue.Enqueue(node.Output);
                    continue;
                }
                throw Refuse($"residual value '{v.Name}' feeds {node.OpType} '{node.Name}', which does not commute with a rotation");
            }
        }

        for (int i = 0; i < normed.Count; i++)
        {
            var u = normed[i];
            if (u.IsGraphOutput) throw Refuse($"norm output '{u.Name}' is a graph output");
            foreach (var use in u.Uses)
            {
                // A Reshape that keeps the hidden axis last and whole (tokens flattened for a Gemm) keeps the rotation.
                if (use.Node.Is("Reshape") && use.InputIndex == 0 &&
                    Constants.Ints(Constants.Of(use.Node.Inputs[1])) is { Length: > 0 } shape && shape[^1] == d)
                {
                    normed.Add(use.Node.Output);
                    continue;
                }
                var reader = map.Linears.FirstOrDefault(l => ReferenceEquals(l.Node, use.Node) && ReferenceEquals(l.Input, u));
                if (reader is null) throw Refuse($"norm output '{u.Name}' feeds {use.Node.OpType} '{use.Node.Name}', not a linear layer");
                if (reader.InFeatures != d) throw Refuse($"{reader.Name} reads {reader.InFeatures} features of a {d}-wide stream");
                bool tied = ReferenceEquals(reader.Weight, table);
                if (tied && !reader.WeightIsOutByIn)
                    throw Refuse($"{reader.Name} reads the embedding table '{table.Name}' as a [{d}, vocab] weight");
                if (!tied && reader.Weight.Uses.Count != 1) throw Refuse($"{reader.Name}'s weight is shared");
                s.Readers.Add(reader);
            }
        }
        foreach (var use in table.Uses)
            if (!ReferenceEquals(use.Node, embedding) &&
                !s.Readers.Any(r => ReferenceEquals(r.Node, use.Node) && ReferenceEquals(r.Weight, table)))
                throw Refuse($"the embedding table '{table.Name}' is also read by {use.Node.OpType} '{use.Node.Name}'");
        if (s.Writers.Count == 0 || s.Readers.Count == 0) throw Refuse("no layer writes or reads the residual stream");
        s.Residual.AddRange(residual);
        s.RotatedValues.AddRange(residual);
        s.RotatedValues.AddRange(s.Norms.Select(n => n.Output));
        s.RotatedValues.AddRange(s.Writers.Select(w => w.Output));
        return s;
    }
}
