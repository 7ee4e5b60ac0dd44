using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// FoldNorm: folds a norm's γ (and β) into the linear layers that read it — W' = diag(γ)·W,
/// b' = b + βᵀ·W — and sets γ = 1, β = 0. Function-preserving. A norm whose output also feeds
/// anything other than linear layers is left alone, and the report says why.
/// </summary>
public sealed class FoldNormPass(bool untie = false) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<FoldNormOptions>("fold_norm", PassKind.FunctionPreserving,
        "fold norm γ/β into the linear layers they feed",
        o => new FoldNormPass(o.Untie));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        foreach (var norm in map.Norms)
        {
            var readers = NormReaders.Of(norm, map, out string? why, allowSharedWeights: untie);
            if (readers is null)
                { ctx.Log.Add($"fold_norm: {norm.Name} not " +
                    $"folded: {why}{(why == NormReaders.SharedWeight ? " (untie: true gives the reader its own copy)" : "")}"); continue; }
            var gamma = norm.Gamma.Initializer!.ToFloat32();
            var beta = norm.Beta?.Initializer?.ToFloat32();
            foreach (var l in readers)
            {
                var w = Weights.Read(l);
                int k = (int)l.InFeatures, n = (int)l.OutFeatures;
                if (beta is not null && beta.Any(b => b != 0))
                {
                    // (x̂·γ + β)·W + b = x̂·(diag(γ)·W) + (b + βᵀ·W).
                    var bias = Quantc.Core.Numerics.Smoothing.CompensateBias(w, k, n, beta, l.Bias?.Initializer?.ToFloat32() ?? []);
                    Weights.WriteBias(g, l, bias, new PassContextBias(ctx));
                }
                Quantc.Core.Numerics.Smoothing.ScaleRows(w, k, n, gamma);
                bool shared = l.Weight.Uses.Count > 1;
                Weights.Write(g, l, w);
                ctx.Plan[l.Name].Transforms.Add($"folded {norm.Name}{(shared ? $" (untied from '{l.Weight.Name}')" : "")}");
                ctx.ReleaseLayerCopies();
            }
            g.SetInitializer(norm.Gamma,
                Tensor.FromFloats(norm.Gamma.Name, norm.Gamma.Initializer.Dims, Enumerable.Repeat(1f, gamma.Length).ToArray()));
            if (norm.Beta?.Initializer is { } bt)
                g.SetInitializer(norm.Beta, Tensor.FromFloats(norm.Beta.Name, bt.Dims, new float[gamma.Length]));
            ctx.Log.Add($"fold_norm: {norm.Name} → {string.Join(", ", readers.Select(r => r.Name))}");
        }
    }
}

/// <summary>The linear layers a norm feeds, when they are its only consumers.</summary>
internal static class NormReaders
{
    /// <summary>The reason given when a reader's weight is shared with another node (a tied embedding).</summary>
    public const string SharedWeight = "a reader's weight is shared";

    public static IReadOnlyList<LinearLayer>? Of(NormInfo norm, ModelMap map, out string? why, bool allowSharedWeights = false)
    {
        why = null;
        if (norm.Gamma.Uses.Count != 1) { why = "its γ is shared"; return null; }
        if (norm.Beta is { } b && b.Uses.Count != 1) { why = "its β is shared"; return null; }
        if (norm.Output.IsGraphOutput) { why = "its output is a graph output"; return null; }
        var readers = map.Readers(norm.Output);
        if (readers.Count == 0) { why = "it feeds no linear layer"; return null; }
        if (readers.Count != norm.Output.Uses.Count)
        {
            var other = norm.Output.Uses.Select(u => u.Node).First(n => !readers.Any(r => ReferenceEquals(r.Node, n)));
            why = $"its output also feeds {other.OpType} '{other.Name}', not only linear layers";
            return null;
        }
        if (!allowSharedWeights && readers.Any(r => r.Weight.Uses.Count != 1)) { why = SharedWeight; return null; }
        return readers;
    }
}

/// <summary>The options of <see cref="FoldNormPass"/>.</summary>
public sealed record FoldNormOptions : PassOptions
{
    [Option("fold into readers whose weight is shared too (a head tied to the input embedding), giving each its own copy")]
    public bool Untie { get; init; }
}
