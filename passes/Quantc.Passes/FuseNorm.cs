using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// FuseNorm: the exporters' decomposed norms — RMSNorm as <c>γ · x · 1/√(mean(x²) + ε)</c> (Pow, ReduceMean,
/// Add, Sqrt, Reciprocal, Mul, Mul) and LayerNorm likewise — become the standard ONNX ops RMSNormalization
/// (opset 23) and LayerNormalization (opset 17), one kernel instead of seven ops. Same function up to float32
/// rounding (the fused kernels accumulate in float32). Norms whose intermediate values are read elsewhere,
/// or that sit between Casts, are left alone with the reason in the log. Runs after the passes that fold
/// or smooth into the norms (it only needs the norm's γ, β and ε, which they leave as initializers).
/// </summary>
public sealed class FuseNormPass : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<NoOptions>("fuse_norm", PassKind.Lowering,
        "decomposed RMSNorm / LayerNorm → ONNX RMSNormalization (opset 23) / LayerNormalization, one kernel each; run at the end",
        _ => new FuseNormPass());

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        long need = ctx.Map.Norms.Any(n => n.Form == "decomposed" && n.Kind == NormKind.RmsNorm) ? 23 : 17;
        if (Quantc.Ir.Import.OpsetConverter.Blocker(ctx.Model, need) is { } blocked)
        {
            ctx.Notice($"fuse_norm: skipped, the model cannot take the opset it needs ({blocked})");
            return;
        }
        var g = ctx.Model.Graph;
        int rms = 0, ln = 0;
        foreach (var norm in ctx.Map.Norms.Where(n => n.Form == "decomposed"))
        {
            if (Refusal(norm) is { } why) { ctx.Log.Add($"fuse_norm: {norm.Name} left as it is: {why}"); continue; }
            bool isRms = norm.Kind == NormKind.RmsNorm;
            var inputs = isRms ? new Value?[] { norm.Input, norm.Gamma } : [norm.Input, norm.Gamma, norm.Beta];
            var outNode = norm.OutputNode;
            string op = isRms ? "RMSNormalization" : "LayerNormalization";
            var n = new Emitter(g, outNode, outNode.Name).NodeOf(op, "_" + op, inputs);
            n.SetAttribute("axis", -1L);
            n.SetAttribute("epsilon", norm.Epsilon);
            // An RMSNorm with a shift (symmetrize's β): RMSNormalization has no bias input, so the Add stays after it.
            var y = isRms && norm.Beta is { } shift ? new Emitter(g, outNode, outNode.Name).Op("Add", "_shift", n.Output, shift) : n.Output;
            g.ReplaceValue(norm.Output, y);
            if (isRms) rms++; else ln++;
        }
        if (rms + ln == 0) { ctx.Log.Add("fuse_norm: no decomposed norm to fuse"); return; }
        g.RemoveDeadCode();
        if (Quantc.Ir.Import.OpsetConverter.Require(ctx.Model, rms > 0 ? 23 : 17) is { } raised)
            ctx.Log.Add($"fuse_norm: {raised.Describe()}");
        ctx.Log.Add($"fuse_norm: {rms} RMSNorm → RMSNormalization, {ln} LayerNorm → LayerNormalization");
    }

    /// <summary>Why <paramref name="norm"/> cannot be replaced by one op, or null.</summary>
    private static string? Refusal(NormInfo norm)
    {
        if (norm.Nodes.Any(n => n.Is("Cast"))) return "it computes between Casts (another precision)";
        if (norm.Gamma.Initializer is null) return "γ is not an initializer";
        if (norm.Beta is { Initializer: null }) return "β is not an initializer";
        var inside = new HashSet<Node>(norm.Nodes, ReferenceEqualityComparer.Instance);
        foreach (var n in norm.Nodes)
            foreach (var o in n.Outputs)
                if (o is not null && !ReferenceEquals(o, norm.Output) && (o.IsGraphOutput || o.Uses.Any(u => !inside.Contains(u.Node))))
                    return $"its intermediate '{o.Name}' is read outside the norm";
        return null;
    }
}
