using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Core.Diff;

/// <summary>How a node of B relates to A.</summary>
public enum NodeChange
{
    /// <summary>Only in B.</summary>
    Added,
    /// <summary>Only in A.</summary>
    Removed,
    /// <summary>In both, reading different inputs.</summary>
    Rewired,
    /// <summary>In both, with different op type, domain or attributes.</summary>
    Modified,
    /// <summary>In both, renamed but otherwise equal.</summary>
    Renamed,
}

/// <summary>One changed node.</summary>
public sealed record NodeDiff(NodeChange Change, string Layer, string? NameA, string? NameB, string OpA, string OpB, string Detail);

/// <summary>One changed initializer, with numeric delta statistics where both sides are comparable.</summary>
public sealed record InitializerDiff(string Layer, string? NameA, string? NameB, string DtypeA, string DtypeB, string ShapeA, string ShapeB,
    long BytesA, long BytesB, double? MaxAbsDelta, double? SqnrDb, string Detail);

/// <summary>The summary of one layer's changes, e.g. "fp32 → int8 W / int8 A, +Hadamard".</summary>
public sealed record LayerSummary(string Layer, string Summary, int NodesAdded, int NodesRemoved, int NodesChanged,
    int InitializersChanged);

/// <summary>The structural difference of two models.</summary>
public sealed record DiffResult(IReadOnlyList<NodeDiff> Nodes, IReadOnlyList<InitializerDiff> Initializers,
    IReadOnlyList<LayerSummary> Layers,
    int MatchedByProvenance, int MatchedByName, int MatchedByStructure)
{
    /// <summary>True when nothing differs.</summary>
    public bool IsEmpty => Nodes.Count == 0 && Initializers.Count == 0;
}

/// <summary>
/// Structural diff of two models (A → B): nodes are matched by provenance (B's recorded origins),
/// then by name, then by structure (same op reading matched inputs); everything unmatched is
/// added or removed; matched nodes are checked for rewiring and attribute changes; initializers
/// are compared by dtype, shape, bytes and numeric delta. Grouped by layer.
/// </summary>
public static class GraphDiff
{
    /// <summary>Compares the main graphs of <paramref name="a"/> and <paramref name="b"/>.</summary>
    public static DiffResult Compute(Model a, Model b)
    {
        var prov = Provenance.Of(b);
        var ga = a.Graph;
        var gb = b.Graph;
        var matchBA = new Dictionary<Node, Node>(ReferenceEqualityComparer.Instance);
        var matchedA = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        int byProv = 0, byName = 0, byStruct = 0;

        // 1. Provenance: a node of B whose first output stands for an output of a node of A.
        foreach (var nb in gb.Nodes)
        {
            if (nb.Outputs.FirstOrDefault() is not { } ob || !prov.Origins.TryGetValue(ob.Name, out var origin)) continue;
            if (ga.Find(origin)?.Producer is { } na && ReferenceEquals(na.Graph, ga) && na.OpType == nb.OpType && matchedA.Add(na))
            { matchBA[nb] = na; byProv++; }
        }
        // 2. Names: same node name, or same first output name, and the same op type.
        var aByName = ga.Nodes.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).Where(g => g.Count() == 1).ToDictionary(g => g.Key, g =>
            g.First(), StringComparer.Ordinal);
        foreach (var nb in gb.Nodes)
        {
            if (matchBA.ContainsKey(nb)) continue;
            Node? na = null;
            if (nb.Name.Length > 0 && aByName.TryGetValue(nb.Name, out var byN) && byN.OpType == nb.OpType && !matchedA.Contains(byN))
                na = byN;
            else if (nb.Outputs.FirstOrDefault() is { } ob && ga.Find(ob.Name)?.Producer is { } p && ReferenceEquals(p.Graph, ga) &&
                p.OpType == nb.OpType && !matchedA.Contains(p)) na = p;
            if (na is not null) { matchBA[nb] = na; matchedA.Add(na); byName++; }
        }
        // 3. Structure: repeat until stable — an unmatched B node whose inputs all map to the inputs of exactly one unmatched A node of the
        // same op.
        bool progress = true;
        while (progress)
        {
            progress = false;
            foreach (var nb in gb.Nodes)
            {
                if (matchBA.ContainsKey(nb)) continue;
                var wanted = nb.Inputs.Select(v => v is null ? null : OriginValue(v, prov, ga, matchBA)).ToList();
                bool unresolved = false;
                for (int i = 0; i < wanted.Count; i++) unresolved |= wanted[i] is null && nb.Inputs[i] is not null;
                if (unresolved) continue;
                var candidates = ga.Nodes.Where(na => !matchedA.Contains(na) && na.OpType == nb.OpType && na.Domain == nb.Domain &&
                    na.Inputs.Count == nb.Inputs.Count &&
                        na.Inputs.Select(v => v?.Name).SequenceEqual(wanted.Select(w => w?.Name))).Take(2).ToList();
                if (candidates.Count != 1) continue;
                matchBA[nb] = candidates[0];
                matchedA.Add(candidates[0]);
                byStruct++;
                progress = true;
            }
        }

        var nodes = new List<NodeDiff>();
        foreach (var nb in gb.Nodes)
        {
            if (!matchBA.TryGetValue(nb, out var na))
            {
                nodes.Add(new NodeDiff(NodeChange.Added, LayerOf(nb), null, Label(nb), "", Op(nb),
                    $"reads {string.Join(", ", nb.Inputs.Select(v => v?.Name ?? "-"))}"));
                continue;
            }
            var wired = nb.Inputs.Select(v => v is null ? null : OriginValue(v, prov, ga, matchBA)?.Name ?? $"(new) {v.Name}").ToList();
            var original = na.Inputs.Select(v => v?.Name).ToList();
            if (Op(na) != Op(nb) || !AttributesEqual(na, nb))
                nodes.Add(new NodeDiff(NodeChange.Modified, LayerOf(nb), Label(na), Label(nb), Op(na), Op(nb), DescribeAttributes(na, nb)));
            else if (!wired.SequenceEqual(original))
                nodes.Add(new NodeDiff(NodeChange.Rewired, LayerOf(nb), Label(na), Label(nb), Op(na), Op(nb),
                    $"inputs [{string.Join(", ", original.Select(x => x ?? "-"))}] → " +
                        $"[{string.Join(", ", nb.Inputs.Select(v => v?.Name ?? "-"))}]"));
            else if (Label(na) != Label(nb))
                nodes.Add(new NodeDiff(NodeChange.Renamed, LayerOf(nb), Label(na), Label(nb), Op(na), Op(nb),
                    $"{Label(na)} → {Label(nb)}"));
        }
        foreach (var na in ga.Nodes)
            if (!matchedA.Contains(na))
                nodes.Add(new NodeDiff(NodeChange.Removed, LayerOf(na), Label(na), null, Op(na), "",
                    $"produced {string.Join(", ", na.Outputs.Select(v => v?.Name ?? "-"))}"));

        var inits = DiffInitializers(ga, gb, prov);
        var layers = Summarise(nodes, inits, ga, gb);
        return new DiffResult(nodes, inits, layers, byProv, byName, byStruct);
    }

    private static Value? OriginValue(Value vb, Provenance prov, Graph ga, Dictionary<Node, Node> matchBA)
    {
        if (vb.Producer is { } p && matchBA.TryGetValue(p, out var na) && vb.ProducerOutputIndex < na.Outputs.Count)
            return na.Outputs[vb.ProducerOutputIndex];
        return ga.Find(prov.SourceOf(vb.Name));
    }

    private static string Label(Node n) => n.Name.Length > 0 ? n.Name : n.Outputs.FirstOrDefault()?.Name ?? n.OpType;
    private static string Op(Node n) => n.IsOnnxDomain ? n.OpType : $"{n.Domain}.{n.OpType}";

    private static bool AttributesEqual(Node a, Node b)
    {
        if (a.Attributes.Count != b.Attributes.Count) return false;
        foreach (var x in a.Attributes)
        {
            var y = b.GetAttribute(x.Name);
            if (y is null) return false;
            if (x.Graph is not null || x.Graphs is not null) continue; // subgraphs are compared by their own nodes, not here
            if (!x.Proto.Equals(y.Proto)) return false;
        }
        return true;
    }

    private static string DescribeAttributes(Node a, Node b)
    {
        var parts = new List<string>();
        if (Op(a) != Op(b)) parts.Add($"op {Op(a)} → {Op(b)}");
        foreach (var x in a.Attributes)
            if (b.GetAttribute(x.Name) is not { } y) parts.Add($"-{x.Name}");
            else if (x.Graph is null && x.Graphs is null && !x.Proto.Equals(y.Proto)) parts.Add($"{x.Name} changed");
        foreach (var y in b.Attributes)
            if (a.GetAttribute(y.Name) is null) parts.Add($"+{y.Name}");
        return string.Join(", ", parts);
    }

    private static List<InitializerDiff> DiffInitializers(Graph ga, Graph gb, Provenance prov)
    {
        var result = new List<InitializerDiff>();
        var seenA = new HashSet<string>(StringComparer.Ordinal);
        foreach (var vb in gb.Initializers)
        {
            var tb = vb.Initializer!;
            string source = prov.SourceOf(vb.Name);
            var va = ga.Find(source);
            if (va is null && source.Split('+') is { Length: > 1 } parts && parts.All(p => ga.Find(p)?.Initializer is not null))
            {
                // Several of A's tensors packed into one of B's (fuse_projections: q/k/v weights concatenated along N).
                var ts = parts.Select(p => ga.Find(p)!.Initializer!).ToList();
                foreach (var p in parts) seenA.Add(p);
                result.Add(new InitializerDiff(LayerOfValue(vb), source, vb.Name, DataTypes.Name(ts[0].DataType),
                    DataTypes.Name(tb.DataType),
                    string.Join(" + ", ts.Select(ShapeOf)), ShapeOf(tb), ts.Sum(t => t.ByteLength), tb.ByteLength, null, null,
                        $"packed from {parts.Length} tensors"));
                continue;
            }
            if (va?.Initializer is not { } ta || !ReferenceEquals(va.Graph, ga))
            {
                result.Add(new InitializerDiff(LayerOfValue(vb), null, vb.Name, "", DataTypes.Name(tb.DataType), "", ShapeOf(tb), 0,
                    tb.ByteLength, null, null, "added"));
                continue;
            }
            seenA.Add(va.Name);
            bool sameType = ta.DataType == tb.DataType, sameShape = ta.Dims.SequenceEqual(tb.Dims);
            double? maxAbs = null, sqnr = null;
            bool bytesEqual = sameType && sameShape && BytesEqual(ta, tb);
            if (bytesEqual && va.Name == vb.Name) continue;
            // Raw integer codes are not comparable to floats (their scales live elsewhere): deltas only between like types.
            if (sameShape && sameType && IsNumeric(ta.DataType) && ta.ElementCount <= 64L << 20)
            {
                var e = new ErrorAccumulator();
                e.Add(ta.ToFloat32(), tb.ToFloat32());
                maxAbs = e.MaxAbsError;
                sqnr = e.SqnrDb;
            }
            string detail = bytesEqual ? "renamed" : string.Join(", ", new[]
            {
                sameType ? null : $"{DataTypes.Name(ta.DataType)} → {DataTypes.Name(tb.DataType)}",
                sameShape ? null : $"{ShapeOf(ta)} → {ShapeOf(tb)}",
                sameType && sameShape ? "values changed" : null,
            }.Where(s => s is not null));
            result.Add(new InitializerDiff(LayerOfValue(vb), va.Name, vb.Name, DataTypes.Name(ta.DataType), DataTypes.Name(tb.DataType),
                ShapeOf(ta), ShapeOf(tb),
                ta.ByteLength, tb.ByteLength, maxAbs, sqnr, detail));
        }
        var usedAsOrigin = gb.Initializers.Select(v => prov.SourceOf(v.Name)).ToHashSet(StringComparer.Ordinal);
        foreach (var va in ga.Initializers)
            if (!seenA.Contains(va.Name) && !usedAsOrigin.Contains(va.Name))
                result.Add(new InitializerDiff(LayerOfValue(va), va.Name, null, DataTypes.Name(va.Initializer!.DataType), "",
                    ShapeOf(va.Initializer), "",
                    va.Initializer.ByteLength, 0, null, null, "removed"));
        return result;
    }

    /// <summary>The layer of an initializer: that of the node that reads it, else from its name.</summary>
    private static string LayerOfValue(Value v)
    {
        if (v.Name.EndsWith(".weight", StringComparison.Ordinal) || v.Name.EndsWith(".bias", StringComparison.Ordinal))
            return LayerOfName(v.Name);
        return v.Uses.Count > 0 ? LayerOf(v.Uses[0].Node) : LayerOfName(v.Name);
    }

    private static bool IsNumeric(int dt) => dt is not ((int)Quantc.Onnx.Proto.TensorProto.Types.DataType.String or 0 or 14 or 15);

    private static bool BytesEqual(Tensor a, Tensor b)
    {
        if (a.ByteLength != b.ByteLength) return false;
        const int chunk = 1 << 24;
        for (long off = 0; off < a.ByteLength; off += chunk)
        {
            int n = (int)Math.Min(chunk, a.ByteLength - off);
            if (!a.Data.Slice(off, n).SequenceEqual(b.Data.Slice(off, n))) return false;
        }
        return true;
    }

    private static string ShapeOf(Tensor t) => "[" + string.Join(",", t.Dims) + "]";

    /// <summary>
    /// The layer a node belongs to, from its name or its weight's name: torch-style node names
    /// ("/model/layers.3/mlp/down_proj/MatMul") and HF weight names ("model.layers.3.mlp.down_proj.weight")
    /// both give "model.layers.3.mlp.down_proj".
    /// </summary>
    public static string LayerOf(Node n)
    {
        foreach (var v in n.Inputs)
            if (v?.Initializer is not null && v.Name.EndsWith(".weight", StringComparison.Ordinal)) return LayerOfName(v.Name);
        // Scoped node names: "/model/layers.3/mlp/down_proj/MatMul" (torch) or "model.layers.3.mlp.down_proj/act_q" (quantc's passes).
        if (n.Name.Contains('/'))
        {
            var parts = n.Name.Trim('/').Split('/');
            if (parts.Length > 1) return string.Join('.', parts[..^1]);
        }
        return LayerOfName(n.Name.Length > 0 ? n.Name : n.Outputs.FirstOrDefault()?.Name ?? "");
    }

    /// <summary>The layer of a tensor name (suffixes like .weight, .bias, _quantized, _scale stripped).</summary>
    public static string LayerOfName(string name)
    {
        string s = name.TrimStart('/').Replace('/', '.');
        foreach (var suffix in new[] { ".weight", ".bias", "_quantized", "_scale", "_zero_point", ".output", "_output_0" })
            if (s.EndsWith(suffix, StringComparison.Ordinal)) s = s[..^suffix.Length];
        int cut = s.LastIndexOf('.');
        return s.Length == 0 ? "(graph)" : cut > 0 && !s.Contains("layers", StringComparison.Ordinal) ? s[..cut] : s;
    }

    private static List<LayerSummary> Summarise(List<NodeDiff> nodes, List<InitializerDiff> inits, Graph ga, Graph gb)
    {
        var layers = nodes.Select(n => n.Layer).Concat(inits.Select(i => i.Layer)).Distinct().Order(StringComparer.Ordinal).ToList();
        var result = new List<LayerSummary>();
        foreach (var layer in layers)
        {
            var ln = nodes.Where(n => n.Layer == layer).ToList();
            var li = inits.Where(i => i.Layer == layer).ToList();
            var parts = new List<string>();
            var weight = li.FirstOrDefault(i => i.NameA?.EndsWith(".weight", StringComparison.Ordinal) == true && i.DtypeA != i.DtypeB);
            string? act = ln.Where(n => n.Change == NodeChange.Added && n.OpB is "QuantizeLinear" or "DynamicQuantizeLinear")
                .Select(n => gb.Nodes.FirstOrDefault(x => x.Name == n.NameB) is { } q && q.Inputs.Count > 2 && q.Inputs[2] is { } zp
                    ? Short(DataTypes.Name(zp.ElementType)) : "uint8")
                .FirstOrDefault();
            if (weight is not null) parts.Add($"{Short(weight.DtypeA)} → {Short(weight.DtypeB)} W{(act is null ? "" : $" / {act} A")}");
            else if (act is not null) parts.Add($"{act} A");
            if (li.Any(i => i.Detail == "values changed")) parts.Add("weights rewritten");
            foreach (var op in ln.Where(n => n.Change == NodeChange.Added &&
                n.OpB is not ("QuantizeLinear" or "DequantizeLinear" or "DynamicQuantizeLinear")).Select(n => n.OpB).Distinct())
                parts.Add($"+{op}");
            foreach (var op in ln.Where(n => n.Change == NodeChange.Removed).Select(n => n.OpA).Distinct())
                parts.Add($"-{op}");
            if (ln.Any(n => n.Change == NodeChange.Rewired)) parts.Add("rewired");
            if (ln.Any(n => n.Change == NodeChange.Modified)) parts.Add("attributes changed");
            if (parts.Count == 0 && ln.All(n => n.Change == NodeChange.Renamed) && li.All(i => i.Detail == "renamed")) parts.Add("renamed");
            result.Add(new LayerSummary(layer, string.Join(", ", parts),
                ln.Count(n => n.Change == NodeChange.Added), ln.Count(n => n.Change == NodeChange.Removed),
                ln.Count(n => n.Change is NodeChange.Modified or NodeChange.Rewired or NodeChange.Renamed), li.Count));
        }
        return result;
    }

    private static string Short(string dtype) =>
        dtype switch { "float32" => "fp32", "float16" => "fp16", "bfloat16" => "bf16", _ => dtype };
}
