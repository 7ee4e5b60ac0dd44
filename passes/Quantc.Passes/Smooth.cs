using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// SmoothQuant (Xiao et al. 2023): per-channel factors s_j = max|X_j|^α / max|W_j|^(1−α) migrate the
/// activation outliers of a linear layer's input into its weight rows: X' = X / s, W' = diag(s)·W.
/// The division is folded into what produces X: the preceding norm's γ (and β), or — for an input
/// that is an element-wise product act(gate) ⊙ up, as LLaMA's down_proj reads — the columns of the
/// up projection. Function-preserving. <c>alpha</c> (default 0.5) sets the migration strength;
/// <c>power_of_two</c> (default true) rounds the factors to powers of two, which makes the rewrite
/// exact in floating point.
/// </summary>
public sealed class SmoothPass(double alpha, bool throughMlp, bool powerOfTwo) : IPass
{
    public string Name => "smooth";
    public PassKind Kind => PassKind.FunctionPreserving;
    public double Alpha => alpha;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = LayerAnalysis.Analyze(g);
        var targets = new List<(Value Input, IReadOnlyList<LinearLayer> Readers, Action<float[]> DivideProducer, string Via, Value[] Changed)>();
        foreach (var norm in map.Norms)
        {
            var readers = NormReaders.Of(norm, map, out string? why);
            if (readers is null) { ctx.Log.Add($"smooth: {norm.Name} not smoothed: {why}"); continue; }
            targets.Add((norm.Output, readers, s => DivideNorm(g, norm, s), norm.Name, [norm.Output]));
        }
        if (throughMlp)
            foreach (var l in map.Linears)
                if (UpProjection(l, map) is { } up)
                    targets.Add((l.Input, [l], s => DivideColumns(g, up, s), up.Name, [up.Node.Outputs[0]!, up.Output, l.Input]));

        if (targets.Count == 0) return;
        var stats = ctx.Calibrate(targets.Select(t => t.Input.Name).Distinct().ToList(), Name);
        foreach (var (input, readers, divide, via, changed) in targets)
        {
            int k = (int)readers[0].InFeatures;
            var weights = readers.Select(r => (Weights.Read(r), k, (int)r.OutFeatures)).ToList();
            var s = Smoothing.SmoothQuantFactors(stats[input.Name].ChannelAbsMax, Smoothing.WeightChannelAbsMax(weights, k), alpha);
            if (powerOfTwo) Smoothing.RoundToPowerOfTwo(s);
            divide(s);
            foreach (var v in changed) ctx.Provenance.RecordTransformed(v.Name, "smoothed");
            for (int i = 0; i < readers.Count; i++)
            {
                var (w, _, n) = weights[i];
                Smoothing.ScaleRows(w, k, n, s);
                Weights.Write(g, readers[i], w);
                ctx.Plan[readers[i].Name].Transforms.Add(string.Create(CultureInfo.InvariantCulture, $"smoothed α={alpha} via {via}"));
            }
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"smooth: {string.Join(", ", readers.Select(r => r.Name))} via {via}: s in [{s.Min():G3}, {s.Max():G3}], input channel outlier ratio {stats[input.Name].ChannelOutlierRatio:0.0}"));
        }
    }

    private static void DivideNorm(Graph g, NormInfo norm, float[] s)
    {
        var gamma = norm.Gamma.Initializer!.ToFloat32();
        for (int j = 0; j < gamma.Length; j++) gamma[j] /= s[j];
        g.SetInitializer(norm.Gamma, Tensor.FromFloats(norm.Gamma.Name, norm.Gamma.Initializer.Dims, gamma));
        if (norm.Beta?.Initializer is { } bt)
        {
            var beta = bt.ToFloat32();
            for (int j = 0; j < beta.Length; j++) beta[j] /= s[j];
            g.SetInitializer(norm.Beta, Tensor.FromFloats(norm.Beta.Name, bt.Dims, beta));
        }
    }

    /// <summary>up's output column j (and bias j) divided by s_j.</summary>
    private static void DivideColumns(Graph g, LinearLayer up, float[] s)
    {
        var w = Weights.Read(up);
        int k = (int)up.InFeatures, n = (int)up.OutFeatures;
        for (int j = 0; j < k; j++)
            for (int c = 0; c < n; c++) w[j * n + c] /= s[c];
        Weights.Write(g, up, w);
        if (up.Bias?.Initializer is { } bt)
        {
            var b = bt.ToFloat32();
            for (int c = 0; c < n; c++) b[c] /= s[c];
            g.SetInitializer(up.Bias, Tensor.FromFloats(up.Bias.Name, bt.Dims, b));
        }
    }

    /// <summary>For x = Mul(a, up(·)) read only by <paramref name="l"/>, with up a linear layer whose output only feeds that Mul: the up projection.</summary>
    private static LinearLayer? UpProjection(LinearLayer l, LayerMap map)
    {
        if (l.Input.Producer is not { } mul || !mul.Is("Mul") || l.Input.Uses.Count != 1) return null;
        foreach (var inp in mul.Inputs)
        {
            var up = map.Linears.FirstOrDefault(x => ReferenceEquals(x.Output, inp));
            if (up is null || up.Output.Uses.Count != 1 || up.Weight.Uses.Count != 1 || up.OutFeatures != l.InFeatures) continue;
            var other = mul.Inputs.First(v => !ReferenceEquals(v, inp));
            if (ReferenceEquals(other, inp)) continue; // up ⊙ up: not linear in up
            return up;
        }
        return null;
    }
}
