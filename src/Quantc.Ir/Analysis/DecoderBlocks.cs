namespace Quantc.Ir.Analysis;

/// <summary>
/// One pre-norm LLaMA-style decoder layer as the model map sees it: x₂ = x + o(attn(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x)))),
/// y = x₂ + down(silu(gate(n₂(x₂))) ⊙ up(n₂(x₂))), RMSNorms, causal attention over grouped key/value heads with the scores
/// scaled by 1/√head_dim, rotate-half RoPE from position tables, linears without biases. Block-wise reconstruction (FlexRound /
/// LRQ's setting) recomputes such a block in C#; <see cref="DecoderBlocks.Find"/> says why a model has none.
/// </summary>
public sealed class DecoderBlock
{
    /// <summary>Stable name: the common prefix of its layers' names, e.g. <c>model.layers.0</c>.</summary>
    public required string Name { get; init; }

    /// <summary>The block's position among the decoder blocks (0 first).</summary>
    public required int Index { get; init; }

    /// <summary>The residual stream entering the block (x).</summary>
    public required Value Input { get; init; }

    /// <summary>The residual stream after the attention's residual Add (x₂).</summary>
    public required Value Middle { get; init; }

    /// <summary>The residual stream leaving the block (y), the next block's <see cref="Input"/>.</summary>
    public required Value Output { get; init; }

    /// <summary>The RMSNorm before the attention (n₁) and before the MLP (n₂).</summary>
    public required NormInfo AttentionNorm { get; init; }
    public required NormInfo MlpNorm { get; init; }

    public required LinearLayer Q { get; init; }
    public required LinearLayer K { get; init; }
    public required LinearLayer V { get; init; }
    public required LinearLayer O { get; init; }
    public required LinearLayer Gate { get; init; }
    public required LinearLayer Up { get; init; }
    public required LinearLayer Down { get; init; }

    /// <summary>The rotary embeddings of the queries and the keys (they share their tables).</summary>
    public required RopeSite QueryRope { get; init; }
    public required RopeSite KeyRope { get; init; }

    /// <summary>The attention around its Softmax (scores, scale, mask, context).</summary>
    public required DecomposedAttention Attention { get; init; }

    /// <summary>Query heads, key/value heads, the width of a head.</summary>
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }

    /// <summary>The residual stream's width.</summary>
    public long Hidden => AttentionNorm.HiddenSize;

    /// <summary>The MLP's width.</summary>
    public long Ffn => Gate.OutFeatures;

    /// <summary>The seven linears in q, k, v, o, gate, up, down order.</summary>
    public IReadOnlyList<LinearLayer> Linears => [Q, K, V, O, Gate, Up, Down];

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name}: hidden {Hidden}, {Heads} heads / {KvHeads} KV heads × {HeadDim}, MLP {Ffn} (SwiGLU), RMSNorm ε {AttentionNorm.Epsilon}";
}

/// <summary>Recognises the chain of <see cref="DecoderBlock"/>s of a model from what its <see cref="ModelMap"/> already knows.</summary>
public static class DecoderBlocks
{
    private sealed class NotABlock(string why) : Exception(why);

    /// <summary>Every decoder block in graph order, each reading the previous one's output; null with the reason when any attention of
    /// the model is not in such a block (the first problem found).</summary>
    public static IReadOnlyList<DecoderBlock>? Find(ModelMap map, out string? why)
    {
        why = null;
        try { return Walk(map); }
        catch (NotABlock e) { why = e.Message; return null; }
    }

    private static List<DecoderBlock> Walk(ModelMap map)
    {
        if (map.Mambas.Count > 0)
            throw new NotABlock($"the model has {map.Mambas.Count} Mamba mixers (selective scans), not attention blocks");
        if (map.Norms.FirstOrDefault(n => n.Kind != NormKind.RmsNorm) is { } layerNorm)
            throw new NotABlock($"{layerNorm.Name} is a {layerNorm.Kind} (OPT-style); the block engine computes RMSNorm (LLaMA-style) " +
                "blocks");
        var attentions = map.DecomposedAttention.Where(d => d.ContextAlone).ToList();
        if (attentions.Count == 0)
        {
            var fused = map.Attention.FirstOrDefault(a => a.Decomposed is null);
            throw new NotABlock(fused is not null
                ? $"attention '{fused.Name}' is a fused {fused.Form} op; block reconstruction recomputes the decomposed (eager) form, " +
                    "as the exporters write it before fuse_attention"
                : "no attention found (no Softmax read by a MatMul)");
        }
        var byOutput = map.Linears.ToDictionary(l => l.Output, l => l, (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance);
        var blocks = new List<DecoderBlock>();
        foreach (var d in attentions)
        {
            var b = Block(map, d, byOutput, blocks.Count);
            if (blocks.Count > 0 && !ReferenceEquals(blocks[^1].Output, b.Input))
                throw new NotABlock($"{b.Name} does not read the output of {blocks[^1].Name} ('{blocks[^1].Output.Name}') but " +
                    $"'{b.Input.Name}'");
            blocks.Add(b);
        }
        return blocks;
    }

    private static DecoderBlock Block(ModelMap map, DecomposedAttention d, Dictionary<Value, LinearLayer> byOutput, int index)
    {
        string at = $"the attention at '{d.Softmax.Name}'";
        if (d.FuseWhy is { } fw) throw new NotABlock($"{at} is not of the eager form (scores, scale, mask, softmax, context): {fw}");
        var qRope = RopeOf(map, d.Q!, at, "query");
        var kRope = RopeOf(map, d.NewKey!, at, "key");
        if (!ReferenceEquals(qRope.CosTable, kRope.CosTable) || !ReferenceEquals(qRope.SinTable, kRope.SinTable) ||
            !ReferenceEquals(qRope.Positions, kRope.Positions))
            throw new NotABlock($"{at}: the query and the key are rotated by different tables or positions");
        int headDim = 2 * qRope.Half;
        if (kRope.Half != qRope.Half) throw new NotABlock($"{at}: the query and the key rotate different widths");
        var q = Projection(qRope.X, byOutput, headDim, at, "query");
        var k = Projection(kRope.X, byOutput, headDim, at, "key");
        var v = Projection(d.NewValue, byOutput, headDim, at, "value");
        var o = OutputProjection(map, d.Context.Output, at);

        var n1 = q.FedBy ?? throw new NotABlock($"{q.Name} does not read a norm's output");
        foreach (var l in (LinearLayer[])[q, k, v])
            if (!ReferenceEquals(l.FedBy, n1) || l.FedVia is not null)
                throw new NotABlock($"{l.Name} does not read {n1.Name}'s output directly, as {q.Name} does");
        CheckNorm(n1);
        var x = n1.Input;
        var mid = ResidualAdd(x, o, n1, "attention");
        var n2 = map.Norms.FirstOrDefault(n => ReferenceEquals(n.Input, mid))
            ?? throw new NotABlock($"no norm reads the residual stream after {o.Name} ('{mid.Name}')");
        CheckNorm(n2);
        var (gate, up, down) = Mlp(map, n2);
        var y = ResidualAdd(mid, down, n2, "MLP");

        long hidden = n1.HiddenSize;
        if (q.OutFeatures % headDim != 0 || k.OutFeatures % headDim != 0 || v.OutFeatures != k.OutFeatures)
            throw new NotABlock($"{at}: q/k/v widths {q.OutFeatures}/{k.OutFeatures}/{v.OutFeatures} are not whole heads of {headDim}");
        int heads = (int)(q.OutFeatures / headDim), kvHeads = (int)(k.OutFeatures / headDim);
        if (heads % kvHeads != 0) throw new NotABlock($"{at}: {heads} query heads do not group over {kvHeads} key/value heads");
        if (n2.HiddenSize != hidden || q.InFeatures != hidden || o.InFeatures != q.OutFeatures || o.OutFeatures != hidden ||
            gate.InFeatures != hidden || up.OutFeatures != gate.OutFeatures || down.InFeatures != gate.OutFeatures ||
            down.OutFeatures != hidden)
            throw new NotABlock($"{at}: the layers' sizes do not chain over a residual stream of {hidden}");
        double scale = 1 / Math.Sqrt(headDim);
        if (Math.Abs(d.Scale - scale) > 1e-5 * scale)
            throw new NotABlock($"{at}: the scores are scaled by {d.Scale}, not 1/√{headDim} = {scale:0.######}");
        var layers = new[] { q, k, v, o, gate, up, down };
        foreach (var l in layers)
        {
            if (l.Bias is not null) throw new NotABlock($"{l.Name} has a bias (the block engine's linears have none)");
            if (l.Conv is not null || l.WeightTranspose is not null) throw new NotABlock($"{l.Name} is a {l.Form}, not a plain linear");
        }
        return new DecoderBlock
        {
            Name = CommonName(layers, index), Index = index, Input = x, Middle = mid, Output = y,
            AttentionNorm = n1, MlpNorm = n2, Q = q, K = k, V = v, O = o, Gate = gate, Up = up, Down = down,
            QueryRope = qRope, KeyRope = kRope, Attention = d, Heads = heads, KvHeads = kvHeads, HeadDim = headDim,
        };
    }

    private static RopeSite RopeOf(ModelMap map, Value v, string at, string what) =>
        map.Ropes.FirstOrDefault(r => ReferenceEquals(r.Add.Output, v))
        ?? throw new NotABlock($"{at}: the {what} does not come straight from a rotate-half RoPE ('{v.Name}' is made by " +
            $"{v.Producer?.OpType ?? "no node"})");

    /// <summary>The linear whose output becomes <paramref name="v"/> through the head split (Reshape to [.., heads, head_dim],
    /// Transpose); the Reshape's last dimension must be one whole head.</summary>
    private static LinearLayer Projection(Value? v, Dictionary<Value, LinearLayer> byOutput, int headDim, string at, string what)
    {
        for (int step = 0; v is not null && step < 4; step++)
        {
            if (byOutput.TryGetValue(v, out var l)) return l;
            if (v.Producer is not { } p || !(p.Is("Reshape") || p.Is("Transpose")) || (step > 0 && v.Uses.Count != 1)) break;
            if (p.Is("Reshape") && Patterns.Constants.Ints(Patterns.Constants.Of(p.Inputs[1])) is { Length: > 0 } shape &&
                shape[^1] != headDim)
                throw new NotABlock($"{at}: the {what} is split into heads of {shape[^1]}, but RoPE rotates {headDim} (partial rotary " +
                    $"is not handled)");
            v = p.Inputs[0];
        }
        throw new NotABlock($"{at}: the {what} is not a linear layer's output split into heads (Reshape, Transpose)" +
            (v is null ? "" : $"; stopped at '{v.Name}'"));
    }

    /// <summary>The linear reading the attention context after the heads are merged back (Transpose, Reshape).</summary>
    private static LinearLayer OutputProjection(ModelMap map, Value v, string at)
    {
        for (int step = 0; step < 4; step++)
        {
            var readers = map.Readers(v);
            if (readers.Count == 1 && v.Uses.Count == 1) return readers[0];
            if (v.Uses.Count != 1 || v.IsGraphOutput || !(v.Uses[0].Node.Is("Transpose") || v.Uses[0].Node.Is("Reshape"))) break;
            v = v.Uses[0].Node.Output;
        }
        throw new NotABlock($"{at}: the context does not reach one linear layer through the head merge (Transpose, Reshape); stopped " +
            $"at '{v.Name}'");
    }

    private static void CheckNorm(NormInfo n)
    {
        if (n.Kind != NormKind.RmsNorm)
            throw new NotABlock($"{n.Name} is a {n.Kind} (OPT-style); the block engine computes RMSNorm (LLaMA-style) blocks");
        if (n.Skip is not null)
            throw new NotABlock($"{n.Name} is a fused {n.Form} with the residual Add inside; block reconstruction reads the decomposed " +
                $"form, as the exporters write it before fuse_norm");
    }

    /// <summary>x + layer's output, where x is read only by <paramref name="norm"/> and that Add (a pre-norm residual).</summary>
    private static Value ResidualAdd(Value x, LinearLayer layer, NormInfo norm, string what)
    {
        var outUse = layer.Output.Uses;
        if (outUse.Count != 1 || layer.Output.IsGraphOutput || !outUse[0].Node.Is("Add") || outUse[0].Node.Inputs.Count != 2 ||
            !ReferenceEquals(outUse[0].Node.Inputs[1 - outUse[0].InputIndex], x))
            throw new NotABlock($"{layer.Name}'s output is not added to the {what} block's input '{x.Name}' (and read nowhere else)");
        var add = outUse[0].Node;
        var normNodes = new HashSet<Node>(norm.Nodes, ReferenceEqualityComparer.Instance);
        foreach (var u in x.Uses)
            if (!ReferenceEquals(u.Node, add) && !normNodes.Contains(u.Node))
                throw new NotABlock($"the residual stream '{x.Name}' is also read by {u.Node.OpType} '{u.Node.Name}' (not a sequential " +
                    $"pre-norm block)");
        if (x.IsGraphOutput) throw new NotABlock($"the residual stream '{x.Name}' is a graph output");
        return add.Output;
    }

    /// <summary>gate, up and down of a SwiGLU MLP reading <paramref name="n2"/>: down(Mul(gate·Sigmoid(gate), up)).</summary>
    private static (LinearLayer Gate, LinearLayer Up, LinearLayer Down) Mlp(ModelMap map, NormInfo n2)
    {
        var feeds = n2.Feeds;
        if (feeds.Count != 2 || feeds.Any(l => l.FedVia is not null))
            throw new NotABlock($"{n2.Name} feeds {feeds.Count} linear layers ({string.Join(", ", feeds.Select(l => l.Name))}); a SwiGLU " +
                $"MLP has a gate and an up projection (fused gate/up is not handled)");
        var byOutput = feeds.ToDictionary(l => l.Output, l => l, (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance);
        foreach (var l in feeds)
        {
            // gate: Mul(g, Sigmoid(g)) · up, read by the down projection.
            var silu = l.Output.Uses.Select(u => u.Node).FirstOrDefault(n => n.Is("Mul"));
            var sig = l.Output.Uses.Select(u => u.Node).FirstOrDefault(n => n.Is("Sigmoid"));
            if (silu is null || sig is null || l.Output.Uses.Count != 2 || !silu.Inputs.Any(i => ReferenceEquals(i, sig.Output)))
                continue;
            if (silu.Output.Uses.Count != 1 || silu.Output.Uses[0].Node is not { } prod || !prod.Is("Mul") || sig.Output.Uses.Count != 1)
                break;
            var other = prod.Inputs[1 - silu.Output.Uses[0].InputIndex];
            if (other is null || !byOutput.TryGetValue(other, out var up) || ReferenceEquals(up, l) || other.Uses.Count != 1) break;
            var readers = map.Readers(prod.Output);
            if (readers.Count != 1 || prod.Output.Uses.Count != 1) break;
            return (l, up, readers[0]);
        }
        throw new NotABlock($"the MLP after {n2.Name} is not down(silu(gate) · up) with silu(g) = g · Sigmoid(g) (GELU or another " +
            $"activation is not handled)");
    }

    private static string CommonName(LinearLayer[] layers, int index)
    {
        string prefix = layers[0].Name;
        foreach (var l in layers.Skip(1))
        {
            int i = 0;
            while (i < prefix.Length && i < l.Name.Length && prefix[i] == l.Name[i]) i++;
            prefix = prefix[..i];
        }
        int cut = prefix.LastIndexOf('.');
        return cut > 0 ? prefix[..cut] : $"block{index}";
    }
}
