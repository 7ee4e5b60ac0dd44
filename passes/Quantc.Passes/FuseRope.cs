using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Patterns;

namespace Quantc.Passes;

/// <summary>
/// FuseRope: the exporters' rotary embedding <c>x·cos + rotate_half(x)·sin</c> — with
/// <c>rotate_half(x) = Concat(−x[…, d/2:], x[…, :d/2])</c> and cos/sin gathered by position ids from
/// half-duplicated tables (HF's <c>cos_cached</c>, <c>[max_positions, d]</c>, Unsqueeze'd over the head axis) —
/// becomes one standard ONNX RotaryEmbedding (opset 23) on the [batch, heads, sequence, head size] tensor,
/// with the tables' first halves as its caches: 7 ops per query or key tensor become one kernel. Exact
/// same arithmetic per element up to float32 rounding. Any other form is left alone with the reason in the log.
/// </summary>
public sealed class FuseRopePass : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<NoOptions>("fuse_rope", PassKind.Lowering,
        "decomposed rotary embedding (x·cos + rotate_half(x)·sin, cos/sin gathered by position) → ONNX RotaryEmbedding (opset 23); run " +
            "at the end, before fuse_attention",
        _ => new FuseRopePass());

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var halves = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);   // table → its first half
        // table → halves equal (every layer shares them)
        var checkedTables = new Dictionary<Value, bool>(ReferenceEqualityComparer.Instance);
        int fused = 0;
        foreach (var add in g.Nodes.Where(n => n.Is("Add")).ToList())
        {
            var m = Match(add, checkedTables, out string? why);
            if (m is null)
            {
                if (why is not null) ctx.Log.Add($"fuse_rope: {add.Name} left as it is: {why}");
                continue;
            }
            var (x, cosTable, sinTable, positions, half) = m.Value;
            Value Half(Value table)
            {
                if (halves.TryGetValue(table, out var h)) return h;
                var t = table.Initializer!;
                long rows = t.Dims[0], d = t.Dims[1];
                var src = t.ToFloat32();
                var dst = new float[rows * half];
                for (long r = 0; r < rows; r++) Array.Copy(src, r * d, dst, r * half, half);
                return halves[table] = g.AddInitializer(Tensor.FromFloats(g.UniqueName(table.Name + "_half"), [rows, half], dst));
            }
            var n = g.AddNode("RotaryEmbedding", [x, Half(cosTable), Half(sinTable), positions], 1,
                name: g.UniqueName(add.Name + "_RotaryEmbedding"), before: add);
            n.SetAttribute("interleaved", 0L);
            g.ReplaceValue(add.Output, n.Output);
            fused++;
        }
        if (fused == 0) { ctx.Log.Add("fuse_rope: no decomposed rotary embedding found"); return; }
        g.RemoveDeadCode();
        if ((ctx.Model.OpsetVersion("") ?? 0) < 23) ctx.Model.SetOpset("", 23);
        ctx.Log.Add($"fuse_rope: {fused} rotary embedding(s) → ONNX RotaryEmbedding (opset 23)");
    }

    /// <summary>
    /// Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, h:)), Slice(x, :h)), sin)) with cos/sin = Unsqueeze(Gather(table, positions), 1);
    /// null when <paramref name="add"/> is not shaped like it (with a reason when it nearly is).
    /// </summary>
    internal static (Value X, Value Cos, Value Sin, Value Positions, int Half)? Match(Node add, Dictionary<Value, bool> checkedTables,
        out string? why)
    {
        why = null;
        Node? MulWith(Value v) => v.Producer is { } p && p.Is("Mul") && v.Uses.Count == 1 && !v.IsGraphOutput ? p : null;
        if (MulWith(add.Inputs[0]!) is not { } m0 || MulWith(add.Inputs[1]!) is not { } m1) return null;
        // One Mul reads Concat(Neg(..), ..) (the rotated half): that one is ·sin, the other x·cos.
        static int ConcatSide(Node mul) => mul.Inputs[0]?.Producer is { } a && a.Is("Concat") ? 0 : mul.Inputs[1]?.Producer is { } b &&
            b.Is("Concat") ? 1 : -1;
        var (cosMul, sinMul) = ConcatSide(m1) >= 0 ? (m0, m1) : ConcatSide(m0) >= 0 ? (m1, m0) : (null!, null!);
        if (cosMul is null) return null;
        int ci = ConcatSide(sinMul);
        var concat = sinMul.Inputs[ci]!.Producer!;
        var sin = sinMul.Inputs[1 - ci]!;
        if (concat.Inputs.Count != 2 || concat.Inputs[0]?.Producer is not { } neg || !neg.Is("Neg")) return null;
        if (neg.Inputs[0]?.Producer is not { } hi || !hi.Is("Slice") || concat.Inputs[1]?.Producer is not { } lo || !lo.Is("Slice"))
            return null;
        var x = lo.Inputs[0]!;
        if (!ReferenceEquals(hi.Inputs[0], x)) return null;
        int xi = ReferenceEquals(cosMul.Inputs[0], x) ? 0 : ReferenceEquals(cosMul.Inputs[1], x) ? 1 : -1;
        if (xi < 0) { why = "x·cos does not read the rotated tensor"; return null; }
        var cos = cosMul.Inputs[1 - xi]!;

        // Slices along the last axis: hi = x[..., h:], lo = x[..., :h].
        static long[]? Arg(Node s, int i) => s.Inputs.Count > i ? Constants.Ints(Constants.Of(s.Inputs[i])) : null;
        bool LastAxis(Node s) => Arg(s, 3) is [var a] && (a == -1 || a == 3) && (Arg(s, 4) is null or [1]);
        if (!LastAxis(hi) || !LastAxis(lo)) { why = "the halves are not sliced along the last axis"; return null; }
        if (Arg(lo, 1) is not [0] || Arg(lo, 2) is not [var h] || Arg(hi, 1) is not [var h2] || h2 != h || Arg(hi, 2) is not [var end] ||
            end < 2 * h)
        { why = "the slices are not the two halves"; return null; }
        long cat = concat.GetInt("axis", 0);
        if (cat != -1 && cat != 3) { why = $"the halves are concatenated along axis {cat}"; return null; }

        // cos and sin: Unsqueeze(Gather(table [P, 2h], positions, axis 0), axes [1]), with the table's halves equal.
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
        return (x, c.Table, s.Table, c.Positions, (int)h);
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
