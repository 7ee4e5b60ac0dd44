using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// OutlierTune's symmetrization: each channel of a LayerNorm's output is shifted by the centre of its
/// calibrated range, z_j = (max_j + min_j) / 2, folded into the norm's β (β' = β − z) and compensated
/// in every reading linear layer's bias (b' = b + zᵀ·W), so the channel ranges are balanced around zero
/// before quantization. Function-preserving. Norms without β (RMSNorm) are left alone.
/// </summary>
public sealed class SymmetrizePass : IPass
{
    public string Name => "symmetrize";
    public PassKind Kind => PassKind.FunctionPreserving;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = LayerAnalysis.Analyze(g);
        var targets = new List<(NormInfo Norm, IReadOnlyList<LinearLayer> Readers)>();
        foreach (var norm in map.Norms)
        {
            if (norm.Beta?.Initializer is null) { ctx.Log.Add($"symmetrize: {norm.Name} skipped: no β to fold the shift into"); continue; }
            var readers = NormReaders.Of(norm, map, out string? why);
            if (readers is null) { ctx.Log.Add($"symmetrize: {norm.Name} skipped: {why}"); continue; }
            targets.Add((norm, readers));
        }
        if (targets.Count == 0) return;
        var stats = ctx.Calibrate(targets.Select(t => t.Norm.Output.Name).ToList(), Name);
        foreach (var (norm, readers) in targets)
        {
            var st = stats[norm.Output.Name];
            var z = Smoothing.SymmetrizationShift(st.ChannelMin, st.ChannelMax);
            var beta = norm.Beta!.Initializer!.ToFloat32();
            for (int j = 0; j < beta.Length; j++) beta[j] -= z[j];
            g.SetInitializer(norm.Beta, Tensor.FromFloats(norm.Beta.Name, norm.Beta.Initializer.Dims, beta));
            foreach (var l in readers)
            {
                var w = Weights.Read(l);
                var bias = Smoothing.CompensateBias(w, (int)l.InFeatures, (int)l.OutFeatures, z, l.Bias?.Initializer?.ToFloat32() ?? []);
                Weights.WriteBias(g, l, bias, new PassContextBias(ctx));
                ctx.Plan[l.Name].Transforms.Add($"symmetrized via {norm.Name}");
            }
            double before = st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => Math.Max(Math.Abs(hi), Math.Abs(lo))).Max();
            double after = st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => (hi - lo) / 2).Max();
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture, $"symmetrize: {norm.Name}: max |z| {z.Max(MathF.Abs):G3}; channel absmax {before:G4} → {after:G4}"));
        }
    }
}
