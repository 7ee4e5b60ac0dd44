using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// One decomposed rotary embedding as the exporters write it: <c>x·cos + rotate_half(x)·sin</c> with
/// <c>rotate_half(x) = Concat(−x[…, h:], x[…, :h])</c> and cos/sin gathered by position ids from half-duplicated
/// [positions, 2h] tables (HF's <c>cos_cached</c>), Unsqueeze'd over the head axis.
/// </summary>
public sealed class RopeSite
{
    /// <summary>The final Add; its output is the rotated tensor.</summary>
    public required Node Add { get; init; }

    /// <summary>The tensor rotated, [batch, heads, sequence, 2h].</summary>
    public required Value X { get; init; }

    /// <summary>The cos and sin tables, [positions, 2h] initializers whose two halves are equal.</summary>
    public required Value CosTable { get; init; }
    public required Value SinTable { get; init; }

    /// <summary>The position ids the tables are gathered by.</summary>
    public required Value Positions { get; init; }

    /// <summary>h: half the rotated width (pairs are (i, i + h)).</summary>
    public required int Half { get; init; }

    /// <inheritdoc/>
    public override string ToString() => $"RoPE '{Add.Name}' on '{X.Name}' (pairs i, i + {Half})";
}

/// <summary>The rule that recognises <see cref="RopeSite"/>s; near misses are refusals with the reason.</summary>
public static class RopeRules
{
    /// <summary>Concat(Neg(Slice(x, …)), Slice(x, …)): rotate_half(x).</summary>
    private static readonly Pattern RotateHalf = P.Op("Concat",
        P.Op("Neg", P.Op("Slice", P.Var("x")).As("hi")),
        P.Op("Slice", P.Same("x")).As("lo")).Where(n => n.Inputs.Count == 2).As("concat");

    /// <summary>Add(Mul(rotate_half(x), sin), Mul(·, ·)), each Mul read only by the Add; the check finds x·cos.</summary>
    public static Rule Rule { get; } = new("rope",
        P.Op("Add",
            P.Op("Mul", RotateHalf, P.Var("sin")).Commutative().SingleUse().As("sin_mul"),
            P.Op("Mul", P.Any(), P.Any()).SingleUse().As("cos_mul")).Commutative().As("add"),
        _ => null);

    /// <summary>Every decomposed RoPE of <paramref name="graph"/>, in graph order; near misses go to <paramref name="refusals"/>.</summary>
    public static List<RopeSite> Find(Graph graph, List<Refusal> refusals)
    {
        var sites = new List<RopeSite>();
        var checkedTables = new Dictionary<Value, bool>(ReferenceEqualityComparer.Instance);   // table → halves equal
        foreach (var n in graph.Nodes)
        {
            if (!n.Is("Add") || Rule.Pattern.MatchAt(n) is not { } m) continue;
            var site = Build(m, checkedTables, out string why);
            if (site is not null) sites.Add(site);
            else refusals.Add(new Refusal(Rule.Name, Refusal.Describe(n), why, n));
        }
        return sites;
    }

    private static RopeSite? Build(Match m, Dictionary<Value, bool> checkedTables, out string why)
    {
        var x = m["x"];
        var cosMul = m.NodeOf("cos_mul")!;
        Node hi = m.NodeOf("hi")!, lo = m.NodeOf("lo")!, concat = m.NodeOf("concat")!;
        int xi = ReferenceEquals(cosMul.Inputs[0], x) ? 0 : ReferenceEquals(cosMul.Inputs[1], x) ? 1 : -1;
        if (xi < 0) { why = "x·cos does not read the rotated tensor"; return null; }
        var cos = cosMul.Inputs[1 - xi]!;
        var sin = m["sin"];

        // Slices along the last axis: hi = x[..., h:], lo = x[..., :h].
        static long[]? Arg(Node s, int i) => s.Inputs.Count > i ? Constants.Ints(Constants.Of(s.Inputs[i])) : null;
        static bool LastAxis(Node s) => Arg(s, 3) is [var a] && (a == -1 || a == 3) && (Arg(s, 4) is null or [1]);
        if (!LastAxis(hi) || !LastAxis(lo)) { why = "the halves are not sliced along the last axis"; return null; }
        if (Arg(lo, 1) is not [0] || Arg(lo, 2) is not [var h] || Arg(hi, 1) is not [var h2] || h2 != h || Arg(hi, 2) is not [var end] ||
            end < 2 * h)
        { why = "the slices are not the two halves"; return null; }
        long cat = concat.GetInt("axis", 0);
        if (cat != -1 && cat != 3) { why = $"the halves are concatenated along axis {cat}"; return null; }

        // cos and sin: Unsqueeze(Gather(table [P, 2h], positions, axis 0), axes [1]).
        (Value Table, Value Positions)? Gathered(Value v)
        {
            if (v.Producer is not { } u || !u.Is("Unsqueeze")) return null;
            var axes = u.Inputs.Count > 1 ? Constants.Ints(Constants.Of(u.Inputs[1])) : u.GetInts("axes")?.ToArray();
            if (axes is not [1] || u.Inputs[0]?.Producer is not { } gather || !gather.Is("Gather") || gather.GetInt("axis", 0) != 0)
                return null;
            return gather.Inputs[0] is { Initializer: { } t } table && t.Dims.Length == 2 && t.Dims[1] == 2 * h
                ? (table, gather.Inputs[1]!) : null;
        }
        if (Gathered(cos) is not { } c || Gathered(sin) is not { } s)
            { why = "cos/sin are not gathered from [positions, head size] tables by position"; return null; }
        if (!ReferenceEquals(c.Positions, s.Positions)) { why = "cos and sin are gathered by different positions"; return null; }
        bool Checked(Value t) => checkedTables.TryGetValue(t, out bool ok) ? ok : checkedTables[t] = HalvesEqual(t);
        if (!Checked(c.Table) || !Checked(s.Table))
            { why = "the cos/sin tables' two halves differ (not the rotate-half layout)"; return null; }
        why = "";
        return new RopeSite
            { Add = m.NodeOf("add")!, X = x, CosTable = c.Table, SinTable = s.Table, Positions = c.Positions, Half = (int)h };
    }

    private static bool HalvesEqual(Value table)
    {
        var t = table.Initializer!;
        long rows = t.Dims[0], d = t.Dims[1], h = d / 2;
        var v = t.ToFloat32();
        for (long r = 0; r < rows; r++)
            for (long j = 0; j < h; j++)
                if (v[r * d + j] != v[r * d + h + j]) return false;
        return true;
    }
}
