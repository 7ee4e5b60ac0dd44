using System.Globalization;
using Quantc.Ir.Patterns;
using Quantc.Onnx;

namespace Quantc.Ir.Analysis;

/// <summary>Where a linear layer's weight comes from.</summary>
public enum WeightSource
{
    /// <summary>An initializer: a linear layer.</summary>
    Initializer,
    /// <summary>The output of a Constant node.</summary>
    ConstantNode,
    /// <summary>A graph input (or a value of an enclosing graph): known only at run time.</summary>
    GraphInput,
    /// <summary>Computed from constants only (Transpose, DequantizeLinear, Cast... of initializers).</summary>
    Computed,
    /// <summary>Computed from the graph's inputs: an activation (attention's Q·Kᵀ), not a weight.</summary>
    Activation,
}

/// <summary>
/// The rules that select linear layers: <c>MatMul(x, W)</c>, <c>Gemm(x, W, C)</c>, and the bias
/// <c>Add(y, b)</c> after a MatMul. Each is a pattern plus a check that says why it refuses.
/// </summary>
public static class LinearRules
{
    /// <summary>x·W with x not a constant and W something that could be a weight (not an activation).</summary>
    public static Rule MatMul { get; } = new("linear",
        P.Op("MatMul", P.Var("x", v => !Constants.IsConstant(v)), P.Var("w", IsWeightLike)).As("mm"),
        m => TransposedWeight(m["w"]) is { } tw ? CheckWeight(m.Root!, m["x"], tw, transB: true)
            : CheckWeight(m.Root!, m["x"], m["w"], transB: false));

    /// <summary>
    /// W when <paramref name="w"/> is Transpose(W, perm [1, 0]) of a 2-D initializer read only by the MatMul — how torch
    /// exports a head tied to the input embedding (the table is [vocab, hidden], the head needs [hidden, vocab]).
    /// </summary>
    public static Value? TransposedWeight(Value w) =>
        w.Producer is { } t && t.Is("Transpose") && w.IsSingleUse && t.Inputs[0] is { IsInitializer: true } src &&
            src.Initializer!.Dims.Length == 2
            && (t.GetInts("perm") is null or [1, 0]) ? src : null;

    /// <summary>Gemm(x, W[, C]) with transA = 0 and α = β = 1; W [in, out], or [out, in] with transB = 1.</summary>
    public static Rule Gemm { get; } = new("linear",
        P.Op("Gemm", P.Var("x", v => !Constants.IsConstant(v)), P.Var("w", IsWeightLike)).As("gemm"),
        CheckGemm);

    /// <summary>Conv(x, W[, B]) with W a floating-point initializer [out, in/group, k…] and B absent or an initializer [out]: a
    /// linear layer over patches (per output channel, W's rows are its [in/group·k…] weights).</summary>
    public static Rule Conv { get; } = new("linear",
        P.Op("Conv", P.Var("x", v => !Constants.IsConstant(v)), P.Var("w", IsWeightLike)).As("conv"),
        CheckConv);

    /// <summary>ConvTranspose(x, W[, B]), W a floating-point initializer [in, out/group, k…] and B absent or an initializer [out]: a
    /// linear layer whose output channel gi·out/group + o has the weights W[gi·in/group + i, o, …] (group = 1: W[:, o, …], axis 1).
    /// </summary>
    public static Rule ConvTranspose { get; } = new("linear",
        P.Op("ConvTranspose", P.Var("x", v => !Constants.IsConstant(v)), P.Var("w", IsWeightLike)).As("convtranspose"),
        CheckConvTranspose);

    private static string? CheckConvTranspose(Match m)
    {
        var n = m.Root!;
        if (CheckConvWeight(m["w"]) is { } bad) return bad;
        var t = m["w"].Initializer!;
        long group = n.GetInt("group", 1);
        if (group < 1 || t.Dims[0] % group != 0)
            return $"ConvTranspose with group = {group} over {t.Dims[0]} input channels (not a divisor)";
        if (n.Inputs.Count > 2 && n.Inputs[2] is { } b && BiasReason(b, t.Dims[1] * group) is { } badBias) return badBias;
        return null;
    }

    private static string? CheckConv(Match m)
    {
        var n = m.Root!;
        if (CheckConvWeight(m["w"]) is { } bad) return bad;
        var t = m["w"].Initializer!;
        if (n.Inputs.Count > 2 && n.Inputs[2] is { } b && BiasReason(b, t.Dims[0]) is { } badBias) return badBias;
        return null;
    }

    private static string? CheckConvWeight(Value w)
    {
        switch (Classify(w))
        {
            case WeightSource.Initializer: break;
            case WeightSource.ConstantNode: return $"weight '{w.Name}' is the output of a Constant node, not an initializer";
            default: return $"weight '{w.Name}' is not an initializer";
        }
        var t = w.Initializer!;
        if (t.Dims.Length < 3) return $"weight '{w.Name}' has shape {Constants.ShapeText(t.Dims)}, not [channels, channels/group, k…]";
        if (!Constants.IsFloatingPoint(t.DataType)) return $"weight '{w.Name}' is {DataTypes.Name(t.DataType)}, not floating point";
        return null;
    }

    /// <summary>Add(y, b) with y (pre-bound) a MatMul's output and b a constant; the check wants a 1-D-like initializer of the layer's
    /// width.</summary>
    public static Rule BiasAdd { get; } = new("bias",
        P.Op("Add", P.Same("y"), P.Var("bias", Constants.IsConstant)).Commutative().As("add"),
        CheckBias);

    /// <summary>Where <paramref name="w"/> comes from (walks at most 32 producers to tell a computed constant from an
    /// activation).</summary>
    public static WeightSource Classify(Value w)
    {
        if (w.IsInitializer) return WeightSource.Initializer;
        if (w.Producer is null) return WeightSource.GraphInput;
        if (w.Producer.Is("Constant")) return WeightSource.ConstantNode;
        var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Value>([w]);
        int budget = 32;
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (!seen.Add(v) || v.IsInitializer) continue;
            if (v.Producer is not { } p) return WeightSource.Activation;
            if (p.Is("Constant")) continue;
            if (--budget < 0 || p.Subgraphs.Any() || p.Inputs.All(i => i is null)) return WeightSource.Activation;
            foreach (var i in p.Inputs) if (i is not null) stack.Push(i);
        }
        return WeightSource.Computed;
    }

    private static bool IsWeightLike(Value w) => Classify(w) != WeightSource.Activation;

    /// <summary>Why <paramref name="w"/> is not a usable weight of <paramref name="node"/>, or null.</summary>
    internal static string? CheckWeight(Node node, Value x, Value w, bool transB)
    {
        switch (Classify(w))
        {
            case WeightSource.ConstantNode: return $"weight '{w.Name}' is the output of a Constant node, not an initializer";
            case WeightSource.GraphInput: return $"second input '{w.Name}' is a graph input, not an initializer";
            case WeightSource.Computed: return $"weight '{w.Name}' is computed from constants by {Refusal.Describe(w.Producer!)}, not an " +
                $"initializer";
            case WeightSource.Activation: return $"second input '{w.Name}' is an activation";
        }
        var t = w.Initializer!;
        if (t.Dims.Length != 2) return $"weight '{w.Name}' has shape {Constants.ShapeText(t.Dims)}, not 2-D";
        if (!Constants.IsFloatingPoint(t.DataType)) return $"weight '{w.Name}' is {DataTypes.Name(t.DataType)}, not floating point";
        long k = transB ? t.Dims[1] : t.Dims[0];
        if (x.Shape is { Length: > 0 } s && s[^1] is { } features && features != k)
            return string.Create(CultureInfo.InvariantCulture,
                $"input '{x.Name}' has {features} features but weight '{w.Name}' expects {k}");
        return null;
    }

    private static string? CheckGemm(Match m)
    {
        var n = m.Root!;
        if (n.GetInt("transA", 0) != 0) return "transA = 1 is not handled";
        bool transB = n.GetInt("transB", 0) != 0;
        if (CheckWeight(n, m["x"], m["w"], transB) is { } why) return why;
        float alpha = n.GetFloat("alpha", 1f), beta = n.GetFloat("beta", 1f);
        if (alpha != 1f) return string.Create(CultureInfo.InvariantCulture, $"alpha = {alpha} (only 1 is handled)");
        var w = m["w"].Initializer!;
        long outF = transB ? w.Dims[0] : w.Dims[1];
        if (n.Inputs.Count > 2 && n.Inputs[2] is { } c)
        {
            if (beta != 1f) return string.Create(CultureInfo.InvariantCulture, $"beta = {beta} (only 1 is handled)");
            if (BiasReason(c, outF) is { } bad) return bad;
        }
        return null;
    }

    private static string? CheckBias(Match m)
    {
        var y = m["y"];
        if (y.Producer is not { } mm || Constants.Of(mm.Inputs[1]) is not { Dims.Length: 2 } w)
            return "the Add does not follow a linear layer";
        return BiasReason(m["bias"], w.Dims[1]);
    }

    /// <summary>Why <paramref name="b"/> is not a bias of <paramref name="outF"/> values (an initializer shaped [outF], [1, outF], ...), or
    /// null.</summary>
    internal static string? BiasReason(Value b, long outF)
    {
        if (b.Initializer is not { } t)
            return Constants.IsConstant(b) ? $"bias '{b.Name}' is the output of a Constant node, not an initializer"
                : $"bias '{b.Name}' is not a constant";
        bool shaped = t.Dims.Length >= 1 && t.Dims[^1] == outF && t.Dims[..^1].All(d => d == 1);
        if (!shaped) return $"bias '{b.Name}' has shape {Constants.ShapeText(t.Dims)}, not [{outF}]";
        if (!Constants.IsFloatingPoint(t.DataType)) return $"bias '{b.Name}' is {DataTypes.Name(t.DataType)}, not floating point";
        return null;
    }
}
