using System.Text.RegularExpressions;

namespace Quantc.Ir.Analysis;

/// <summary>
/// Stable layer names from what exporters leave in a graph: the parameter's name
/// (<c>model.layers.0.self_attn.q_proj.weight</c> → <c>model.layers.0.self_attn.q_proj</c>; ONNX
/// Runtime GenAI's <c>….q_proj.MatMul.weight</c> too), else the node's scope path
/// (<c>/model/layers.0/self_attn/q_proj/MatMul</c> → <c>model.layers.0.self_attn.q_proj</c>), else
/// a meaningful parameter name, else the node's name. Generated names such as
/// <c>onnx::MatMul_1234</c> or <c>val_12</c> are never used when something better exists.
/// </summary>
public static partial class LayerNames
{
    private static readonly string[] ParameterSuffixes = [".weight", "_weight", ".kernel", ".scale"];

    [GeneratedRegex(@"^_?(val|v|t|const|constant|initializer|param)?_*\d+$", RegexOptions.IgnoreCase)]
    private static partial Regex GeneratedName();

    [GeneratedRegex(@"^(MatMul|Gemm|Add|Mul|MatMulNBits|SimplifiedLayerNormalization|SkipSimplifiedLayerNormalization|LayerNormalization" +
        @"|SkipLayerNormalization|RMSNormalization|LayerNorm|SkipLayerNorm)(_\d+)?$")]
    private static partial Regex OpTypeSegment();

    /// <summary>False for names an exporter made up (<c>onnx::MatMul_12</c>, <c>val_3</c>, <c>const_fold_opt__7</c>, <c>123</c>).</summary>
    public static bool IsMeaningful(string name) =>
        name.Length > 0 && !name.StartsWith("onnx::", StringComparison.Ordinal) &&
            !name.StartsWith("const_fold_opt", StringComparison.Ordinal)
        && !GeneratedName().IsMatch(name);

    /// <summary>The module path of a parameter name (suffix <c>.weight</c> and a trailing op segment such as <c>.MatMul</c> stripped), or
    /// null when the name does not look like one.</summary>
    public static string? FromParameter(string name)
    {
        if (!IsMeaningful(name)) return null;
        foreach (var suffix in ParameterSuffixes)
        {
            if (!name.EndsWith(suffix, StringComparison.Ordinal) || name.Length == suffix.Length) continue;
            string path = name[..^suffix.Length];
            int dot = path.LastIndexOf('.');
            if (dot > 0 && OpTypeSegment().IsMatch(path[(dot + 1)..])) path = path[..dot];
            return path;
        }
        return null;
    }

    /// <summary>The module path of a torch-style node name (<c>/a/b.0/c/Op_3</c> → <c>a.b.0.c</c>), or null.</summary>
    public static string? FromScope(string nodeName)
    {
        if (!nodeName.StartsWith('/')) return null;
        var parts = nodeName.Trim('/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 2 ? string.Join('.', parts[..^1]) : null;
    }

    /// <summary>The name of a linear layer computed by <paramref name="node"/> with weight <paramref name="weight"/>.</summary>
    public static string Linear(Node node, Value weight) =>
        FromParameter(weight.Name) ?? FromScope(node.Name) ?? (IsMeaningful(weight.Name) ? weight.Name : null)
        ?? (node.Name.Length > 0 ? node.Name : weight.Name);

    /// <summary>
    /// The name of a linear layer that reads <paramref name="weight"/> transposed — a head tied to the input embedding,
    /// whose parameter names the embedding, not the head: the node's scope first (<c>/lm_head/MatMul</c> → <c>lm_head</c>).
    /// </summary>
    public static string LinearTransposed(Node node, Value weight) =>
        FromScope(node.Name) ?? (IsMeaningful(node.Name) ? node.Name : (FromParameter(weight.Name) ?? weight.Name) + ".transposed");

    /// <summary>The name of a norm with scale <paramref name="gamma"/> computed by <paramref name="nodes"/> (output node first).</summary>
    public static string Norm(Value gamma, IReadOnlyList<Node> nodes) =>
        FromParameter(gamma.Name) ?? nodes.Select(n => FromScope(n.Name)).FirstOrDefault(s => s is not null)
        ?? (IsMeaningful(gamma.Name) ? gamma.Name : null)
        ?? (nodes.Count > 0 && nodes[0].Name.Length > 0 ? nodes[0].Name : gamma.Name);

    /// <summary><paramref name="name"/>, or <c>name_1</c>, <c>name_2</c>... — the first not in <paramref name="taken"/> (which then holds
    /// it).</summary>
    public static string Unique(string name, ISet<string> taken)
    {
        if (taken.Add(name)) return name;
        for (int k = 1; ; k++)
            if (taken.Add($"{name}_{k}")) return $"{name}_{k}";
    }
}
