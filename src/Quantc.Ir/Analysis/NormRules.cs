using System.Globalization;
using Quantc.Ir.Patterns;
using Quantc.Onnx;

namespace Quantc.Ir.Analysis;

/// <summary>A norm-selecting rule and how to read a <see cref="NormInfo"/> off its accepted match.</summary>
/// <param name="Rule">Pattern and check.</param>
/// <param name="Build">Makes the record from an accepted match, given a function that names it from γ and the nodes.</param>
public sealed record NormRule(Rule Rule, Func<Match, Func<Value, IReadOnlyList<Node>, string>, NormInfo> Build);

/// <summary>
/// The rules that select normalisations: RMSNorm decomposed as torch.onnx emits it
/// (<c>γ · x · 1/√(mean(x²) + ε)</c>, optionally between Casts), LayerNorm decomposed likewise, and
/// the fused ops SimplifiedLayerNormalization, RMSNormalization, LayerNormalization and
/// com.microsoft Skip(Simplified)LayerNormalization. Checks return the reason a near miss is not a
/// norm quantc can use (γ not an initializer, ReduceMean over another axis, ε not a scalar...).
/// </summary>
public static class NormRules
{
    private static readonly string[] FusedDomains = ["", "com.microsoft"];

    /// <summary>x² as Pow(x, p) (p checked to be 2) or Mul(x, x).</summary>
    private static Pattern Square(string x) => P.OneOf(
        P.Op("Pow", P.Same(x), P.Const("p")).As("pow"),
        P.Op("Mul", P.Same(x), P.Same(x)).As("square"));

    /// <summary>√(mean(x²) + ε).</summary>
    private static Pattern Rms(string x) =>
        P.Op("Sqrt", P.Op("Add", P.Op("ReduceMean", Square(x)).As("mean"), P.Const("eps")).Commutative().As("add_eps"));

    /// <summary>x · 1/√(…) (Reciprocal or Div(1, ·)) or x / √(…), where <paramref name="first"/> matches (and captures) x.</summary>
    private static Pattern Normalised(Pattern first, string x)
    {
        var rms = Rms(x);
        return P.OneOf(
            P.Op("Mul", first, P.OneOf(P.Op("Reciprocal", rms), P.Op("Div", P.Const(1f), rms))).Commutative(),
            P.Op("Div", first, rms));
    }

    /// <summary>[β +] γ · [Cast](x / √(mean(x²) + ε)); β (a constant vector) is the explicit shift OutlierTune's symmetrize adds to
    /// an RMSNorm.</summary>
    public static Pattern RmsNormPattern { get; } = P.Optional(
        P.Op("Add",
            P.Op("Mul", P.Var("gamma"), P.Optional(P.Op("Cast", Normalised(P.Var("x"), "x")).As("cast_out"))).Commutative().As("out"),
            P.Var("beta", IsShiftVector)).Commutative().As("shift"));

    /// <summary>A constant 1-D initializer: what may be an RMSNorm's shift β (its length is checked against the hidden size).</summary>
    private static bool IsShiftVector(Value v) => v.Initializer is { Dims.Length: 1 };

    /// <summary>[β +] γ · c / √(mean(c²) + ε) with c = x − mean(x).</summary>
    public static Pattern LayerNormPattern { get; } = P.Optional(
        P.Op("Add",
            P.Op("Mul", P.Var("gamma"),
                Normalised(P.Op("Sub", P.Var("x"), P.Op("ReduceMean", P.Same("x")).As("mean0")).As("centre").Named("c"), "c"))
                .Commutative().As("scale"),
            P.Var("beta", Constants.IsConstant)).Commutative().As("shift"));

    /// <summary>Decomposed RMSNorm.</summary>
    public static NormRule RmsNorm { get; } = new(new Rule("rmsnorm", RmsNormPattern, m => CheckDecomposed(m, "RMSNorm")), BuildDecomposed);

    /// <summary>Decomposed LayerNorm.</summary>
    public static NormRule LayerNorm { get; } = new(new Rule("layernorm", LayerNormPattern, m => CheckDecomposed(m, "LayerNorm")),
        BuildDecomposed);

    /// <summary>SimplifiedLayerNormalization(x, γ) (default domain, as ONNX Runtime registers it, or com.microsoft).</summary>
    public static NormRule Simplified { get; } = Fused("SimplifiedLayerNormalization", FusedDomains, NormKind.RmsNorm, skip: false,
        betaInput: null, defaultEps: 1e-5f);

    /// <summary>ONNX RMSNormalization(x, γ) (opset 23).</summary>
    public static NormRule RmsNormalization { get; } = Fused("RMSNormalization", [""], NormKind.RmsNorm, skip: false, betaInput: null,
        defaultEps: 1e-5f);

    /// <summary>com.microsoft SkipSimplifiedLayerNormalization(x, skip, γ[, bias]).</summary>
    public static NormRule SkipSimplified { get; } = Fused("SkipSimplifiedLayerNormalization", ["com.microsoft"], NormKind.RmsNorm,
        skip: true, betaInput: null, defaultEps: 1e-12f);

    /// <summary>LayerNormalization(x, γ[, β]).</summary>
    public static NormRule LayerNormalization { get; } = Fused("LayerNormalization", FusedDomains, NormKind.LayerNorm, skip: false,
        betaInput: 2, defaultEps: 1e-5f);

    /// <summary>com.microsoft SkipLayerNormalization(x, skip, γ[, β[, bias]]).</summary>
    public static NormRule SkipLayerNormalization { get; } = Fused("SkipLayerNormalization", ["com.microsoft"], NormKind.LayerNorm,
        skip: true, betaInput: 3, defaultEps: 1e-12f);

    /// <summary>Every norm rule; where matches overlap, the analysis keeps the one covering more nodes.</summary>
    public static IReadOnlyList<NormRule> All { get; } = [LayerNorm, RmsNorm, Simplified, RmsNormalization, SkipSimplified,
        LayerNormalization, SkipLayerNormalization];

    // ------------------------------------------------------------------ decomposed

    private static string? CheckDecomposed(Match m, string what)
    {
        string not = $"not a usable {what}: ";
        var x = m["x"];
        var gamma = m["gamma"];
        if (!Constants.IsConstant(gamma)) return $"{not}the normalised value is multiplied by '{gamma.Name}', which is not a constant";
        if (ScaleReason(gamma, "γ", HiddenSize(x)) is { } g) return not + g;
        if (m.ValueOf("beta") is { } beta && ScaleReason(beta, "β", HiddenSize(x)) is { } b) return not + b;
        if (m.TensorOf("p") is { } p && (p.ElementCount != 1 || !Constants.IsNumeric(p) || p.ToFloat32()[0] != 2f))
            return not + (p.ElementCount == 1 && Constants.IsNumeric(p)
                ? string.Create(CultureInfo.InvariantCulture, $"Pow raises to {p.ToFloat32()[0]}, not 2")
                : $"Pow's exponent has shape {Constants.ShapeText(p.Dims)}");
        foreach (var key in new[] { "mean0", "mean" })
            if (m.NodeOf(key) is { } mean && LastAxisReason(mean, x) is { } axis) return not + axis;
        var eps = m.TensorOf("eps")!;
        if (eps.ElementCount != 1) return $"{not}epsilon '{m["eps"].Name}' has shape {Constants.ShapeText(eps.Dims)}, not a single value";
        if (!Constants.IsNumeric(eps)) return $"{not}epsilon '{m["eps"].Name}' is {DataTypes.Name(eps.DataType)}";
        return null;
    }

    private static NormInfo BuildDecomposed(Match m, Func<Value, IReadOnlyList<Node>, string> name)
    {
        var nodes = m.MatchedNodes.ToList();
        var x = m["x"];
        // A Cast to float32 in front (fp16 models) belongs to the norm when only the norm reads its output.
        if (x.Producer is { } cast && cast.Is("Cast") && cast.Inputs[0] is { } raw && x.Uses.All(u => m.Covers(u.Node)) && !x.IsGraphOutput)
        {
            nodes.Add(cast);
            x = raw;
        }
        var gamma = m["gamma"];
        return new NormInfo
        {
            Name = name(gamma, nodes),
            Kind = m.NodeOf("centre") is null ? NormKind.RmsNorm : NormKind.LayerNorm,
            Form = "decomposed",
            Input = x,
            Output = m.RootValue,
            Gamma = gamma,
            Beta = m.ValueOf("beta"),
            Epsilon = m.Scalar("eps"),
            Nodes = nodes,
        };
    }

    // ------------------------------------------------------------------ fused

    private static NormRule Fused(string op, string[] domains, NormKind kind, bool skip, int? betaInput, float defaultEps)
    {
        var pattern = skip
            ? P.Op(op, P.Var("x"), P.Var("skip"), P.Var("gamma")).In(domains).As("norm")
            : P.Op(op, P.Var("x"), P.Var("gamma")).In(domains).As("norm");
        string? Check(Match m)
        {
            var n = m.Root!;
            string not = $"not a usable {(kind == NormKind.RmsNorm ? "RMSNorm" : "LayerNorm")}: ";
            long? hidden = HiddenSize(m["x"]);
            if (ScaleReason(m["gamma"], "scale", hidden) is { } g) return not + g;
            if (Beta(n) is { } beta && ScaleReason(beta, "bias", hidden) is { } b) return not + b;
            long axis = n.GetInt("axis", -1);
            if (axis != -1 && (Rank(m["x"]) is not { } r || axis != r - 1))
                return string.Create(CultureInfo.InvariantCulture, $"{not}it normalises from axis {axis}, not only over the last axis");
            return null;
        }
        Value? Beta(Node n) => betaInput is { } i && n.Inputs.Count > i ? n.Inputs[i] : null;
        NormInfo Build(Match m, Func<Value, IReadOnlyList<Node>, string> name)
        {
            var n = m.Root!;
            return new NormInfo
            {
                Name = name(m["gamma"], [n]),
                Kind = kind,
                Form = op,
                Input = m["x"],
                Skip = m.ValueOf("skip"),
                Output = n.Output,
                Gamma = m["gamma"],
                Beta = Beta(n),
                Epsilon = n.GetFloat("epsilon", defaultEps),
                Nodes = [n],
            };
        }
        return new NormRule(new Rule(op, pattern, Check), Build);
    }

    // ------------------------------------------------------------------ shared checks

    /// <summary>Why <paramref name="v"/> is not a usable γ/β (a 1-D floating-point initializer of the hidden size), or null.</summary>
    private static string? ScaleReason(Value v, string what, long? hidden)
    {
        if (v.Initializer is not { } t)
            return Constants.IsConstant(v) ? $"{what} '{v.Name}' is the output of a Constant node, not an initializer"
                : $"{what} '{v.Name}' is not a constant";
        if (t.Dims.Length != 1) return $"{what} '{v.Name}' has shape {Constants.ShapeText(t.Dims)}, not 1-D";
        if (!Constants.IsFloatingPoint(t.DataType)) return $"{what} '{v.Name}' is {DataTypes.Name(t.DataType)}, not floating point";
        if (hidden is { } h && t.Dims[0] != h)
            return string.Create(CultureInfo.InvariantCulture, $"{what} '{v.Name}' has {t.Dims[0]} values but the hidden size is {h}");
        return null;
    }

    /// <summary>Why a ReduceMean does not reduce exactly the last axis of <paramref name="x"/> with keepdims, or null.</summary>
    private static string? LastAxisReason(Node reduce, Value x)
    {
        string what = Refusal.Describe(reduce);
        if (reduce.GetInt("keepdims", 1) != 1) return $"{what} has keepdims = 0";
        long[]? axes = reduce.GetInts("axes")?.ToArray();
        if (axes is null && reduce.Inputs.Count > 1 && reduce.Inputs[1] is { } a)
        {
            axes = Constants.Ints(Constants.Of(a));
            if (axes is null) return $"{what} takes its axes from '{a.Name}', which is not an integer constant";
        }
        if (axes is null || axes.Length == 0) return $"{what} reduces every axis, not only the last";
        if (axes.Length != 1) return $"{what} reduces axes {Constants.ShapeText(axes)}, not only the last";
        if (axes[0] == -1) return null;
        if (Rank(x) is not { } rank)
            return string.Create(CultureInfo.InvariantCulture, $"{what} reduces axis {axes[0]} of an input of unknown rank");
        return axes[0] == rank - 1 ? null
            : string.Create(CultureInfo.InvariantCulture, $"{what} reduces axis {axes[0]}, not the last axis ({rank - 1})");
    }

    /// <summary>The rank of <paramref name="x"/> (looking through a Cast), when known.</summary>
    private static int? Rank(Value x) => ShapeOf(x)?.Length;

    /// <summary>The size of <paramref name="x"/>'s last axis (looking through a Cast), when known.</summary>
    private static long? HiddenSize(Value x) => ShapeOf(x) is { Length: > 0 } s ? s[^1] : null;

    private static long?[]? ShapeOf(Value x) =>
        x.Shape ?? (x.Producer is { } p && p.Is("Cast") && p.Inputs[0] is { } i ? i.Shape : null);
}
