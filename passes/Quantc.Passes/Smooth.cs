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
/// up projection. Function-preserving. <c>alpha</c> (default 0.5) sets the migration strength, or, with
/// <c>alpha: auto</c>, is searched per group of layers reading one input: each α of <c>alpha_grid</c> is scored
/// by the error of the group's W8A8 output (int8 per-tensor activations, int8 per-channel weights) on
/// <c>search_rows</c> calibration rows, and the least-error α wins (<see cref="Smoothing.SearchAlpha"/>).
/// <c>power_of_two</c> rounds the factors to powers of two, which makes the rewrite exact in floating point; with
/// <c>auto</c> (the default) it does so unless, under <c>alpha: auto</c>, the rounded factors of the best α span at most
/// one octave (little smoothing is left, as on small real models whose channel ranges are close) and a second search with
/// exact factors lowers the output error by 5 % or more: then those are used (the rewrite is exact up to float32
/// rounding), and the log gives both errors. Inputs whose readers all match <c>exclude</c> (regular expressions on layer names; lm_head by
/// default, as quantize's) are not smoothed: smooth runs before quantize, and a layer left in float gains nothing from it.
/// </summary>
public sealed class SmoothPass(double? alpha, bool throughMlp, string powerOfTwo, IReadOnlyList<double>? grid = null, int searchRows = 256,
    IReadOnlyList<string>? exclude = null) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<SmoothOptions>("smooth", PassKind.FunctionPreserving,
        "SmoothQuant: migrate activation outliers into the weights by per-channel factors folded into what produces each input",
        o => new SmoothPass(o.AlphaValue, o.ThroughMlp, o.PowerOfTwo, o.AlphaGrid.Count > 0 ? o.AlphaGrid : null, o.SearchRows, o.Exclude));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    /// <summary>The default α grid of <c>alpha: auto</c>.</summary>
    public static readonly IReadOnlyList<double> DefaultGrid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var targets = new List<(Value Input, IReadOnlyList<LinearLayer> Readers, Action<float[]> DivideProducer, string Via,
            Value[] Changed)>();
        int convs = map.Linears.Count(l => l.Conv is not null);
        if (convs > 0)
            ctx.Log.Add($"smooth: {convs} Conv layer(s) not smoothed: a per-input-channel factor of a Conv folds into its producer " +
                "only channel-wise across the kernel, which this pass does not do (SmoothQuant is for MatMul / Gemm layers)");
        foreach (var norm in map.Norms)
        {
            var readers = NormReaders.Of(norm, map, out string? why);
            if (readers is not null && readers.Any(r => r.Conv is not null)) { readers = null; why = "a Conv reads it"; }
            if (readers is null) { ctx.Log.Add($"smooth: {norm.Name} not smoothed: {why}"); continue; }
            targets.Add((norm.Output, readers, s => DivideNorm(g, norm, s), norm.Name, [norm.Output]));
        }
        if (throughMlp)
            foreach (var l in map.Linears.Where(l => l.Conv is null))
                if (UpProjection(l, map) is { } up)
                    targets.Add((l.Input, [l], s => DivideColumns(g, up, s), up.Name, [up.Node.Outputs[0]!, up.Output, l.Input]));

        var excluded = exclude ?? SmoothOptions.DefaultExclude;
        int candidates = targets.Count;
        targets.RemoveAll(t =>
        {
            bool skip = t.Readers.All(r => excluded.Any(p => System.Text.RegularExpressions.Regex.IsMatch(r.Name, p)));
            if (skip) ctx.Log.Add($"smooth: {string.Join(", ", t.Readers.Select(r => r.Name))} not smoothed: excluded (stays float)");
            return skip;
        });
        if (targets.Count == 0)
        {
            ctx.Notice(candidates == 0
                ? $"smooth: nothing smoothed: no input of a linear layer comes from a " +
                    $"norm{(throughMlp ? " or an act(gate) ⊙ up product" : "")} it can fold into ({map.Norms.Count} norms)"
                : $"smooth: nothing smoothed: the readers of all {candidates} smoothable inputs are excluded");
            return;
        }
        var inputs = targets.Select(t => t.Input.Name).Distinct().ToList();
        // alpha: auto also needs sampled rows of each input: taken in the same calibration run as the statistics.
        var sampler = alpha is null ? new RowSampler(inputs, searchRows, ctx.Model.SpillFileFor) : null;
        var stats = ctx.Calibrate(inputs, Name, sampler is null ? null : sampler.Observe);
        foreach (var (input, readers, divide, via, changed) in targets)
        {
            int k = (int)readers[0].InFeatures;
            var weights = readers.Select(r => (Weights.Read(r), k, (int)r.OutFeatures)).ToList();
            double a;
            var wAbs = Smoothing.WeightChannelAbsMax(weights, k);
            bool pow2 = powerOfTwo != "false";
            if (alpha is { } fixedAlpha) a = fixedAlpha;
            else
            {
                var (rows, count) = sampler!.Rows(input.Name);
                var alphas = grid ?? DefaultGrid;
                string names = string.Join(", ", readers.Select(r => r.Name));
                var x = rows.AsSpan(0, count * k);
                var ws = weights.Select(w => (w.Item1, w.Item3)).ToList();
                (a, var errors) = Smoothing.SearchAlpha(x, count, k, ws, stats[input.Name].ChannelAbsMax, alphas, pow2);
                if (pow2 && powerOfTwo == "auto" && alphas.Count > 1 &&
                    PowerOfTwoSpread(Smoothing.SmoothQuantFactors(stats[input.Name].ChannelAbsMax, wAbs, a)) <= 2)
                {
                    // Rounded to powers of two, the best α's factors span at most one octave: (almost) no smoothing is left.
                    // Search with exact factors too and keep them when they lower the error clearly.
                    var (exactAlpha, exactErrors) = Smoothing.SearchAlpha(x, count, k, ws, stats[input.Name].ChannelAbsMax, alphas, false);
                    double pow2Best = errors.Min(), exactBest = exactErrors.Min();
                    bool exact = exactBest < 0.95 * pow2Best;
                    ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                        $"smooth: {names}: power-of-two factors span one octave at α {a:0.##}; exact factors: α {exactAlpha:0.##}, error " +
                            $"{exactBest:0.000e0} against {pow2Best:0.000e0} → {(exact ? "exact factors" : "powers of two kept")}"));
                    if (exact) (a, errors, pow2) = (exactAlpha, exactErrors, false);
                }
                ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                    $"smooth: {string.Join(", ", readers.Select(r => r.Name))}: α searched on {count} rows → {a:0.##} (relative W8A8 " +
                        $"output error {string.Join(" ", alphas.Select((v, i) => $"{v:0.##}:{errors[i]:0.000e0}"))})"));
            }
            var s = Smoothing.SmoothQuantFactors(stats[input.Name].ChannelAbsMax, wAbs, a);
            if (pow2) Smoothing.RoundToPowerOfTwo(s);
            divide(s);
            foreach (var v in changed) ctx.Provenance.RecordTransformed(v.Name, "smoothed");
            for (int i = 0; i < readers.Count; i++)
            {
                var (w, _, n) = weights[i];
                Smoothing.ScaleRows(w, k, n, s);
                Weights.Write(g, readers[i], w);
                ctx.Plan[readers[i].Name].Transforms.Add(string.Create(CultureInfo.InvariantCulture,
                    $"smoothed α={a:0.##}{(alpha is null ? " (searched)" : "")}{(pow2 ? "" : ", exact factors")} via {via}"));
            }
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"smooth: {string.Join(", ", readers.Select(r => r.Name))} via {via}: s in [{s.Min():G3}, {s.Max():G3}], input channel " +
                    $"outlier ratio {stats[input.Name].ChannelOutlierRatio:0.0}"));
            ctx.ReleaseLayerCopies();
        }
    }

    /// <summary>How many octaves the factors span once rounded to powers of two (1: all the same power, no smoothing).</summary>
    private static int PowerOfTwoSpread(float[] s)
    {
        var r = (float[])s.Clone();
        Smoothing.RoundToPowerOfTwo(r);
        return (int)MathF.Round(MathF.Log2(r.Max() / r.Min())) + 1;
    }

    internal static void DivideNorm(Graph g, NormInfo norm, float[] s)
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
    internal static void DivideColumns(Graph g, LinearLayer up, float[] s)
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

    /// <summary>For x = Mul(a, up(·)) read only by <paramref name="l"/>, with up a linear layer whose output only feeds that Mul: the up
    /// projection.</summary>
    internal static LinearLayer? UpProjection(LinearLayer l, ModelMap map)
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

/// <summary>The options of <see cref="SmoothPass"/>.</summary>
public sealed record SmoothOptions : PassOptions
{
    [Option("migration strength: a number in [0, 1], or auto (searched per layer group against the W8A8 output error)")]
    public string Alpha { get; init; } = "0.5";

    [Option("the α values auto scores (default 0.1…0.9)", Min = 0, Max = 1)]
    public IReadOnlyList<double> AlphaGrid { get; init; } = [];

    [Option("sampled calibration rows auto scores each α on", Min = 1)]
    public int SearchRows { get; init; } = 256;

    [Option("also smooth inputs that are act(gate) ⊙ up products, folding the factors into up's columns")]
    public bool ThroughMlp { get; init; } = true;

    [Option("round the factors to powers of two (the rewrite is then exact in floating point); auto: unless, under alpha: auto, " +
        "they leave almost no smoothing and exact factors lower the error by 5 % or more", Choices = "auto|true|false")]
    public string PowerOfTwo { get; init; } = "auto";

    [Option("layers left in float (quantize's exclude): inputs read only by them are not smoothed", Regex = true)]
    public IReadOnlyList<string> Exclude { get; init; } = DefaultExclude;

    /// <summary>quantize's default exclude.</summary>
    public static readonly IReadOnlyList<string> DefaultExclude = ["^lm_head$"];

    /// <summary>The fixed α, or null for auto.</summary>
    public double? AlphaValue => Alpha == "auto" ? null : double.Parse(Alpha, NumberStyles.Float, CultureInfo.InvariantCulture);

    public override string? Check()
    {
        if (Alpha != "auto" &&
            !(double.TryParse(Alpha, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v is >= 0 and <= 1))
            return $"parameter 'alpha' = '{Alpha}' must be a number in [0, 1] or auto";
        if (Alpha != "auto" && (Given("alpha_grid") || Given("search_rows"))) return "'alpha_grid' and 'search_rows' need alpha: auto";
        return null;
    }
}
