namespace Quantc.Ir.Layers;

/// <summary>Kind of normalisation.</summary>
public enum NormKind
{
    /// <summary>x / sqrt(mean(x²) + ε) · γ.</summary>
    RmsNorm,
    /// <summary>(x − mean) / sqrt(var + ε) · γ + β.</summary>
    LayerNorm,
}

/// <summary>A recognised normalisation: where it reads and writes, its γ (and β), and how it was written.</summary>
public sealed record NormInfo(string Name, NormKind Kind, string Form, Value Input, Value Output, Value Gamma, Value? Beta, float Epsilon,
    IReadOnlyList<Node> Nodes)
{
    /// <summary>The node whose output is the normalised value (the γ multiplication, or the fused op).</summary>
    public Node OutputNode => Output.Producer!;
}

/// <summary>
/// A recognised linear layer y = x·W (+ b): MatMul with a constant 2-D weight ([in, out], as torch
/// exports it) and an optional Add of a constant bias, or Gemm (transB = 1: W is [out, in]).
/// </summary>
public sealed record LinearLayer(string Name, Node Node, Node? BiasAdd, Value Input, Value Output, Value Weight, Value? Bias,
    long InFeatures, long OutFeatures, bool WeightIsOutByIn)
{
    /// <summary>The norm whose output this layer reads directly, if any.</summary>
    public NormInfo? FedBy { get; internal set; }
}

/// <summary>What layer analysis found in a graph, and why it passed over what it did not take.</summary>
public sealed class LayerMap
{
    public List<LinearLayer> Linears { get; } = [];
    public List<NormInfo> Norms { get; } = [];

    /// <summary>Near misses with the reason ("MatMul 'x': weight is not a constant").</summary>
    public List<string> Refusals { get; } = [];

    /// <summary>The linear layers that read <paramref name="v"/> (e.g. q, k and v read the same normed input).</summary>
    public IReadOnlyList<LinearLayer> Readers(Value v) => Linears.Where(l => ReferenceEquals(l.Input, v)).ToList();

    /// <summary>The linear layer named <paramref name="name"/>.</summary>
    public LinearLayer? this[string name] => Linears.FirstOrDefault(l => l.Name == name);
}

/// <summary>
/// Recognises linear layers and norms (decomposed RMSNorm as torch.onnx emits it; fused
/// SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization and LayerNormalization) and which
/// norm feeds which linear layers.
/// </summary>
public static class LayerAnalysis
{
    /// <summary>Analyses the main graph of <paramref name="graph"/> (subgraphs are not searched).</summary>
    public static LayerMap Analyze(Graph graph)
    {
        var map = new LayerMap();
        foreach (var n in graph.Nodes)
        {
            if (TryNorm(n, map) is { } norm) map.Norms.Add(norm);
            if (TryLinear(n, map) is { } lin) map.Linears.Add(lin);
        }
        var byOutput = new Dictionary<Value, NormInfo>(ReferenceEqualityComparer.Instance);
        foreach (var norm in map.Norms) byOutput[norm.Output] = norm;
        foreach (var l in map.Linears)
            if (byOutput.TryGetValue(l.Input, out var norm)) l.FedBy = norm;
        return map;
    }

    // ------------------------------------------------------------------ linear layers

    private static LinearLayer? TryLinear(Node n, LayerMap map)
    {
        if (n.Is("MatMul"))
        {
            if (n.Inputs[1] is not { } w) return null;
            if (w.Initializer is not { } wt)
            {
                if (w.Producer is null || !w.Producer.Is("Constant"))
                {
                    // Activation × activation (attention scores): not a linear layer, nothing to report.
                    if (w.Producer is not null) return null;
                    map.Refusals.Add($"MatMul '{n.Name}': second input '{w.Name}' is not a constant");
                    return null;
                }
                wt = w.Producer.GetTensor("value")!;
            }
            if (wt.Dims.Length != 2) { map.Refusals.Add($"MatMul '{n.Name}': weight '{w.Name}' is {wt.Dims.Length}-D, not 2-D"); return null; }
            if (n.Inputs[0] is not { } x || x.IsInitializer) return null;
            long k = wt.Dims[0], outF = wt.Dims[1];
            var (add, bias) = BiasOf(n.Output, outF);
            return new LinearLayer(NameOf(n, w), n, add, x, add?.Output ?? n.Output, w, bias, k, outF, WeightIsOutByIn: false);
        }
        if (n.Is("Gemm"))
        {
            if (n.Inputs.Count < 2 || n.Inputs[1]?.Initializer is not { } wt || n.Inputs[0] is not { } x)
            {
                map.Refusals.Add($"Gemm '{n.Name}': weight is not a constant");
                return null;
            }
            if (n.GetInt("transA", 0) != 0 || n.GetFloat("alpha", 1) != 1 || n.GetFloat("beta", 1) != 1)
            {
                map.Refusals.Add($"Gemm '{n.Name}': transA/alpha/beta other than 0/1/1 are not handled");
                return null;
            }
            bool transB = n.GetInt("transB", 0) != 0;
            long k = transB ? wt.Dims[1] : wt.Dims[0], outF = transB ? wt.Dims[0] : wt.Dims[1];
            Value? c = n.Inputs.Count > 2 ? n.Inputs[2] : null;
            if (c is not null && (c.Initializer is not { } ct || ct.ElementCount != outF))
            {
                map.Refusals.Add($"Gemm '{n.Name}': C is not a constant bias of {outF} values");
                return null;
            }
            return new LinearLayer(NameOf(n, n.Inputs[1]!), n, null, x, n.Output, n.Inputs[1]!, c, k, outF, WeightIsOutByIn: transB);
        }
        return null;
    }

    /// <summary>An Add of a constant 1-D bias of <paramref name="outF"/> values reading <paramref name="y"/> as its only use.</summary>
    private static (Node? Add, Value? Bias) BiasOf(Value y, long outF)
    {
        if (y.Uses.Count != 1 || y.IsGraphOutput) return (null, null);
        var use = y.Uses[0].Node;
        if (!use.Is("Add") || use.Inputs.Count != 2) return (null, null);
        var other = use.Inputs[1 - y.Uses[0].InputIndex];
        if (other?.Initializer is { } t && t.Dims.Length == 1 && t.Dims[0] == outF) return (use, other);
        return (null, null);
    }

    /// <summary>
    /// A stable layer name: the weight's name without ".weight" (HF names: model.layers.0.self_attn.q_proj),
    /// else the node's scope path (/model/layers.0/self_attn/q_proj/MatMul → model.layers.0.self_attn.q_proj),
    /// else the node or weight name.
    /// </summary>
    public static string NameOf(Node n, Value weight)
    {
        if (weight.Name.EndsWith(".weight", StringComparison.Ordinal)) return weight.Name[..^".weight".Length];
        if (n.Name.StartsWith('/') && n.Name.Count(c => c == '/') >= 2)
            return string.Join('.', n.Name.Trim('/').Split('/')[..^1]);
        return n.Name.Length > 0 ? n.Name : weight.Name;
    }

    // ------------------------------------------------------------------ norms

    private static bool IsLastAxisReduce(Node reduce)
    {
        IReadOnlyList<long>? axes = reduce.GetInts("axes");
        if (axes is null && reduce.Inputs.Count > 1 && reduce.Inputs[1]?.Initializer is { } at) axes = at.AsSpan<long>().ToArray();
        if (axes is null && reduce.Inputs.Count > 1 && reduce.Inputs[1]?.Producer is { } pc && pc.Is("Constant")) axes = pc.GetTensor("value")!.AsSpan<long>().ToArray();
        if (axes is null || axes.Count != 1) return false;
        var rank = reduce.Inputs[0]?.Shape?.Length;
        return axes[0] == -1 || (rank is { } r && axes[0] == r - 1);
    }

    /// <summary>x · (1 / sqrt(mean(x²) + ε)) or x / sqrt(mean(x²) + ε), with x captured as "x" and ε as "eps".</summary>
    private static readonly Pattern RmsCore = P.OneOf(
        P.Op("Mul", P.Var("x"),
            P.Op("Reciprocal", P.Op("Sqrt", P.Op("Add",
                P.Op("ReduceMean", P.Op("Pow", P.Var("x"), P.Scalar(2f))).Where(IsLastAxisReduce).Where(n => n.GetInt("keepdims", 1) == 1),
                P.AnyScalar("eps")).Commutative()))).Commutative(),
        P.Op("Div", P.Var("x"),
            P.Op("Sqrt", P.Op("Add",
                P.Op("ReduceMean", P.Op("Pow", P.Var("x"), P.Scalar(2f))).Where(IsLastAxisReduce).Where(n => n.GetInt("keepdims", 1) == 1),
                P.AnyScalar("eps")).Commutative())));

    /// <summary>γ · [Cast](rms(x)) with γ a 1-D constant.</summary>
    private static readonly Pattern RmsNormDecomposed =
        P.Op("Mul", P.Const("gamma", t => t.Dims.Length == 1), P.Optional("Cast", RmsCore)).Commutative().As("out");

    private static NormInfo? TryNorm(Node n, LayerMap map)
    {
        if (n.Is("Mul") && RmsNormDecomposed.MatchAt(n) is { } m)
        {
            var gamma = m.Values["gamma"];
            if (gamma.Initializer is null) { map.Refusals.Add($"RMSNorm at '{n.Name}': γ is a Constant node, not an initializer"); return null; }
            var x = m.Values["x"];
            var shape = x.Shape;
            if (shape is { Length: > 0 } && shape[^1] is { } c && c != gamma.Initializer.ElementCount) return null;
            return new NormInfo(NormName(gamma, n), NormKind.RmsNorm, "decomposed", x, n.Output, gamma, null,
                m.Tensors["eps"].ToFloat32()[0], m.Matched);
        }
        if ((n.Is("SimplifiedLayerNormalization") || n.Is("SimplifiedLayerNormalization", "com.microsoft")) && n.Inputs.Count >= 2 && n.Inputs[1]?.Initializer is not null)
            return new NormInfo(NormName(n.Inputs[1]!, n), NormKind.RmsNorm, n.OpType, n.Inputs[0]!, n.Output, n.Inputs[1]!, null, n.GetFloat("epsilon", 1e-5f), [n]);
        if (n.Is("SkipSimplifiedLayerNormalization", "com.microsoft") && n.Inputs.Count >= 3 && n.Inputs[2]?.Initializer is not null)
            return new NormInfo(NormName(n.Inputs[2]!, n), NormKind.RmsNorm, n.OpType, n.Inputs[0]!, n.Output, n.Inputs[2]!, null, n.GetFloat("epsilon", 1e-5f), [n]);
        if (n.Is("LayerNormalization") && n.Inputs.Count >= 2 && n.Inputs[1]?.Initializer is not null)
        {
            if (n.GetInt("axis", -1) != -1 && n.Inputs[0]?.Shape is { } s && n.GetInt("axis", -1) != s.Length - 1)
            {
                map.Refusals.Add($"LayerNormalization '{n.Name}': normalises more than the last axis");
                return null;
            }
            var beta = n.Inputs.Count > 2 ? n.Inputs[2] : null;
            return new NormInfo(NormName(n.Inputs[1]!, n), NormKind.LayerNorm, n.OpType, n.Inputs[0]!, n.Output, n.Inputs[1]!, beta, n.GetFloat("epsilon", 1e-5f), [n]);
        }
        return null;
    }

    private static string NormName(Value gamma, Node n) =>
        gamma.Name.EndsWith(".weight", StringComparison.Ordinal) ? gamma.Name[..^".weight".Length] : NameOf(n, gamma);
}
