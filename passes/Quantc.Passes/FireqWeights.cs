using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;

namespace Quantc.Passes;

/// <summary>
/// FireqWeights (FireQ, Baek et al. 2025): the decision of FireQ's linear layers — int4 symmetric weights per group of
/// <c>group_size</c> along K whose group scales are float8 e4m3fn values (floored at 2^-9), on the weight multiplied by a
/// per-tensor power of two t (<see cref="Int4Fp8.Quantize"/>: the t ∈ {2^0…2^14} with the least lower slack among those
/// keeping every group's t·max ≤ 448), and float8 e4m3fn activations per token (scale absmax/448). Without
/// <c>per_tensor</c> t stays 1 (the ablation: group scales below 2^-9 are floored). A layer whose K the group size does not
/// divide takes the largest power of two ≥ 16 that does (else a multiple of 8; else it stays float), with the reason. The
/// plan holds t·W's int4 values and scales and the exponent of t; <c>lower_int4fp8</c> emits them.
/// </summary>
public sealed class FireqWeightsPass(int groupSize, bool perTensor, IReadOnlyList<string> exclude) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<FireqWeightsOptions>("fireq_weights", PassKind.Decision,
        "FireQ: int4 weights per group with float8 group scales and a per-tensor power of two t, float8 per-token activations",
        o => new FireqWeightsPass(o.GroupSize, o.PerTensor, o.Exclude))
        with { Contract = new([Facts.FloatLayers], [Facts.Formats, Facts.RoundedWeights], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        int layers = 0, groups = 0, under = 0, underT = 0;
        var exponents = new SortedDictionary<int, int>();
        foreach (var l in ctx.Map.Linears)
        {
            var plan = ctx.Plan[l.Name];
            if (exclude.FirstOrDefault(p => Regex.IsMatch(l.Name, p)) is { } excluded)
            {
                plan.Reasons.Add($"kept float: matches exclude pattern {excluded}");
                continue;
            }
            int k = (int)l.InFeatures, n = (int)l.OutFeatures;
            int group = QuantizePass.GroupSizeFor(k, groupSize);
            if (group == 0)
            {
                plan.Reasons.Add($"fireq_weights: kept float: in_features {k} has no divisor ≤ {groupSize} that is a multiple of 8");
                continue;
            }
            if (group != groupSize)
                plan.Reasons.Add($"fireq_weights: group size {group} instead of {groupSize}: in_features {k} is not a multiple of " +
                    $"{groupSize}");
            var kn = Weights.Read(l);
            var nk = new float[kn.Length];
            for (int j = 0; j < k; j++) for (int c = 0; c < n; c++) nk[c * k + j] = kn[j * n + c];
            var w = perTensor ? Int4Fp8.Quantize(nk, n, k, group) : Int4Fp8.QuantizeAt(nk, n, k, group, 0);
            plan.WeightFormat = NumberFormat.Int4;
            plan.WeightGranularity = Granularity.PerGroup;
            plan.GroupSize = group;
            plan.WeightSymmetric = true;
            plan.WeightMethod = "rtn";
            plan.QuantizedWeight = w.Weight;
            plan.WeightExponent = w.Exponent;
            plan.ActivationFormat = NumberFormat.Fp8;
            plan.ActivationMode = ActivationMode.Dynamic;
            string limit = w.LimitExponent < 0 ? $"no t ≤ 2^{Int4Fp8.MaxExponent} passes 448"
                : $"2^{w.LimitExponent} would take a group past 448";
            plan.Reasons.Add($"fireq_weights: int4 (group {group}) with float8 group scales, t = 2^{w.Exponent} " +
                $"({(perTensor ? limit : "per_tensor off")}); {w.Underflow} of {w.Weight.Scales.Length} group scales below 2^-9 at " +
                "t = 1, " +
                $"{w.UnderflowAtT} at t; float8 e4m3fn per-token activations");
            layers++;
            groups += w.Weight.Scales.Length;
            under += w.Underflow;
            underT += w.UnderflowAtT;
            exponents[w.Exponent] = exponents.GetValueOrDefault(w.Exponent) + 1;
        }
        if (layers == 0) { ctx.Log.Add($"fireq_weights: no linear layer quantized ({ctx.Map.Linears.Count} found, all excluded)"); return; }
        ctx.Log.Add($"fireq_weights: {layers} layers int4 × float8; t per layer: " +
            $"{string.Join(", ", exponents.Select(kv => $"2^{kv.Key} ×{kv.Value}"))}; group scales below 2^-9: {under} of {groups} " +
            "at t = 1, " +
            $"{underT} at the chosen t");
    }
}

/// <summary>The options of <see cref="FireqWeightsPass"/>.</summary>
public sealed record FireqWeightsOptions : PassOptions
{
    [Option("weights per scale along K (a smaller power of two where K is not a multiple)", Min = 8)]
    public int GroupSize { get; init; } = 128;

    [Option("choose the per-tensor power of two t (false: t = 1, group scales below 2^-9 floored)")]
    public bool PerTensor { get; init; } = true;

    [Option("layers kept in float", Regex = true)]
    public IReadOnlyList<string> Exclude { get; init; } = ["lm_head"];
}
