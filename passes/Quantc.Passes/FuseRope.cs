using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;

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
        if (Quantc.Ir.Import.OpsetConverter.Blocker(ctx.Model, 23) is { } blocked)
        {
            ctx.Notice($"fuse_rope: skipped, the model cannot take the opset it needs ({blocked})");
            return;
        }
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var halves = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);   // table → its first half
        foreach (var r in map.Refusals.Where(r => r.Rule == RopeRules.Rule.Name))
            ctx.Log.Add($"fuse_rope: {r.Node!.Name} left as it is: {r.Reason}");
        foreach (var rope in map.Ropes)
        {
            Value Half(Value table)
            {
                if (halves.TryGetValue(table, out var h)) return h;
                var t = table.Initializer!;
                long rows = t.Dims[0], d = t.Dims[1];
                var src = t.ToFloat32();
                var dst = new float[rows * rope.Half];
                for (long r = 0; r < rows; r++) Array.Copy(src, r * d, dst, r * rope.Half, rope.Half);
                return halves[table] = g.AddInitializer(Tensor.FromFloats(g.UniqueName(table.Name + "_half"), [rows, rope.Half], dst));
            }
            var add = rope.Add;
            var n = new Emitter(g, add, add.Name).Node("RotaryEmbedding", "_RotaryEmbedding", rope.X, Half(rope.CosTable),
                Half(rope.SinTable), rope.Positions);
            n.SetAttribute("interleaved", 0L);
            g.ReplaceValue(add.Output, n.Output);
        }
        if (map.Ropes.Count == 0) { ctx.Log.Add("fuse_rope: no decomposed rotary embedding found"); return; }
        g.RemoveDeadCode();
        if (Quantc.Ir.Import.OpsetConverter.Require(ctx.Model, 23) is { } raised) ctx.Log.Add($"fuse_rope: {raised.Describe()}");
        ctx.Log.Add($"fuse_rope: {map.Ropes.Count} rotary embedding(s) → ONNX RotaryEmbedding (opset 23)");
    }
}
