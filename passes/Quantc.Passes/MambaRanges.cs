using System.Globalization;
using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// MambaRanges (Quamba): static int8 per-tensor ranges for the inputs of every Mamba mixer's conv1d
/// (x) and selective scan (x, dt, B, C, z), recorded in the plan's activations. The scan's x — the
/// SiLU of the conv, one-sided and heavy-tailed — is clipped at the <c>x_percentile</c>th percentile
/// (<c>x_method: percentile</c>, Quamba's 99.999) or kept min-max; every other range is min-max. x_proj
/// reads the same x as the scan, so its input range is set to the scan's (one quantized x feeds both).
/// Run after <c>ranges</c>.
/// </summary>
public sealed class MambaRangesPass(RangeMethod xMethod, double xPercentile) : IPass, ICalibrationNeeds
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<MambaRangesOptions>("mamba_ranges", PassKind.Decision,
        "Quamba: static int8 ranges of every Mamba mixer's conv and scan inputs",
        o => new MambaRangesPass(o.XMethod == "percentile" ? RangeMethod.Percentile : RangeMethod.MinMax, o.XPercentile))
        with { Contract = new([Facts.Formats, Facts.FloatLayers], [Facts.Ranges], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var map = ctx.Map;
        var blocks = map.Mambas;
        if (blocks.Count == 0)
        {
            // A Mamba recipe on a model without Mamba mixers would silently be a plain W8A8: refuse it.
            var near = map.Refusals.FirstOrDefault(r => r.Rule.Contains("mamba", StringComparison.OrdinalIgnoreCase));
            throw new Quantc.Onnx.BadInputException("mamba_ranges: no Mamba mixer found in the model (this pass and the quamba recipes " +
                "are for Mamba models)" +
                (near is null ? "" : $"; nearest miss: {near}"));
        }
        var roles = Roles(map);
        var stats = ctx.Calibrate(roles.Select(r => r.Item3.Name).Distinct().ToList(), Name);
        string pct = xPercentile.ToString(CultureInfo.InvariantCulture);
        foreach (var (b, role, v) in roles)
        {
            var st = stats[v.Name];
            bool clip = role == "scan x" && xMethod == RangeMethod.Percentile;
            var plan = new ActivationPlan(v.Name, b.Name, role)
            {
                Range = RangeSelector.Select(st, clip ? RangeMethod.Percentile : RangeMethod.MinMax, xPercentile),
                RangeMethod = clip ? $"percentile {pct}" : "minmax",
            };
            if (clip)
            {
                float full = st.AbsMax, kept = Math.Max(Math.Abs(plan.Range.Lo), Math.Abs(plan.Range.Hi));
                plan.Reasons.Add(string.Create(CultureInfo.InvariantCulture,
                    $"clipped at the {pct}th percentile: |x| ≤ {kept:G4} of max {full:G4} ({full / Math.Max(kept, 1e-30f):0.0}× finer " +
                    $"step)"));
                ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                    $"mamba_ranges: {b.Name} scan x clipped to {kept:G4} (max {full:G4})"));
                if (ctx.Plan.TryGet(b.XProj.Name, out var xp) && xp.ActivationFormat != NumberFormat.Fp32 &&
                    xp.ActivationMode == ActivationMode.Static)
                {
                    xp.ActivationRange = plan.Range;
                    xp.RangeMethod = plan.RangeMethod;
                    xp.Reasons.Add("mamba_ranges: input range shared with the scan's x (percentile-clipped)");
                }
            }
            ctx.Plan.SetActivation(plan);
        }
    }

    /// <summary>The calibrated inputs of every mixer: the conv's x and the scan's x, dt, B, C and z.</summary>
    private static List<(MambaBlock Block, string Role, Quantc.Ir.Value Tensor)> Roles(ModelMap map) =>
        map.Mambas.SelectMany(b => new[]
        {
            (b, "conv x", b.X), (b, "scan x", b.ScanX), (b, "scan dt", b.Dt), (b, "scan B", b.B), (b, "scan C", b.C), (b, "scan z", b.Z),
        }).ToList();

    public IReadOnlyCollection<string> CalibrationNeeds(PassContext ctx) => Roles(ctx.Map).Select(r => r.Tensor.Name).Distinct().ToList();
}

/// <summary>The options of <see cref="MambaRangesPass"/>.</summary>
public sealed record MambaRangesOptions : PassOptions
{
    [Option("range of the scan's input x", Choices = "percentile|minmax")]
    public string XMethod { get; init; } = "percentile";

    [Option("the percentile of |x| kept when x_method is percentile", Min = 0, MinExclusive = true, Max = 100)]
    public double XPercentile { get; init; } = 99.999;
}
