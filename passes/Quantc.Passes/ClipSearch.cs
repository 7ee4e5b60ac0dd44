using System.Globalization;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// ClipSearch: PrefixQuant's grid search of the static activation ranges' clip ratio, per layer input — for each
/// ratio r of a grid the range chosen by <c>ranges</c> is shrunk to r·range, sampled calibration rows X are fake-quantized
/// on the layer's activation grid (as lower_qdq will: per-tensor scale, saturating), and the output error
/// Σ over the input's readers ‖(X − X̂)·W‖² is measured in float weights; the ratio of least error wins for every reader
/// of that input (they share one QDQ). The paper scores whole blocks with quantized weights; this scores each input's
/// linear layers, a cheaper stand-in. Runs after <c>ranges</c>; a Decision pass.
/// </summary>
public sealed class ClipSearchPass(IReadOnlyList<double> grid, int rows, string scope = "layer", int sequences = 8, int sweeps = 2,
    string blockWeights = "float", string blockInputs = "float")
    : IPass
{
    public static readonly PassInfo Info = PassInfo.Of<ClipSearchOptions>("clip_search", PassKind.Decision,
        "grid search of each static activation range's clip ratio against its linear layers' output error, or (scope: block) " +
            "against each LLaMA decoder block's output error",
        o => new ClipSearchPass(o.Grid, o.Rows, o.Scope, o.Samples, o.Sweeps, o.BlockWeights, o.BlockInputs))
        with { Contract = new([Facts.Formats, Facts.Ranges, Facts.FloatLayers], [Facts.Ranges], []) };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var layers = ctx.Map.Linears.Where(l => ctx.Plan.TryGet(l.Name, out var p) && p.ActivationMode == ActivationMode.Static &&
            p.ActivationFormat.IsInteger).ToList();
        if (layers.Count == 0)
        {
            ctx.Notice("clip_search: no layer with static integer activations: nothing to search");
            return;
        }
        foreach (var l in layers.Where(l => ctx.Plan[l.Name].ActivationRange is null))
            throw new Quantc.Onnx.BadInputException(
                $"clip_search: {l.Name} has no activation range yet: put a ranges pass before clip_search");
        if (scope == "block")
        {
            BlockClipSearch.Run(ctx, "clip_search (block)", grid, sequences, sweeps, blockWeights == "rtn", blockInputs == "quantized",
                layers);
            return;
        }
        var groups = layers.GroupBy(l => l.Input.Name).ToList();
        var sampler = new RowSampler([.. groups.Select(g => g.Key)], rows, ctx.Model.SpillFileFor);
        ctx.Calibrate([.. groups.Select(g => g.Key)], Name, sampler.Observe);
        int shrunk = 0;
        foreach (var group in groups)
        {
            var readers = group.ToList();
            var plan0 = ctx.Plan[readers[0].Name];
            var (lo, hi) = plan0.ActivationRange!.Value;
            var (x, count) = sampler.Rows(group.Key);
            int k = (int)readers[0].InFeatures;
            var weights = readers.Select(r => (W: Weights.Read(r), N: (int)r.OutFeatures)).ToList();
            var errors = grid.Select(r => Error(x, count, k, weights, plan0.ActivationFormat, lo * r, hi * r)).ToList();
            int best = errors.IndexOf(errors.Min()), one = grid.ToList().IndexOf(1.0);
            double unclipped = one >= 0 ? errors[one] : Error(x, count, k, weights, plan0.ActivationFormat, lo, hi);
            double ratio = grid[best];
            if (ratio < 1) shrunk++;
            foreach (var r in readers)
            {
                var plan = ctx.Plan[r.Name];
                plan.ActivationRange = ((float)(lo * ratio), (float)(hi * ratio));
                plan.Reasons.Add(string.Create(CultureInfo.InvariantCulture,
                    $"clip_search: activation range × {ratio:0.##} (output error on {count} rows {errors[best]:0.###e0} vs " +
                    $"{unclipped:0.###e0} unclipped)"));
            }
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"clip_search: {string.Join(", ", readers.Select(r => r.Name))}: clip ratio {ratio:0.##} " +
                $"(output error {string.Join(" ", grid.Select((v, i) => $"{v:0.##}:{errors[i]:0.00e0}"))})"));
            ctx.ReleaseLayerCopies();
        }
        ctx.Log.Add($"clip_search: {shrunk} of {groups.Count} inputs clipped below their {ctx.Plan[layers[0].Name].RangeMethod} range");
    }

    /// <summary>Σ over readers of ‖(X − X̂)·W‖² for X̂ the rows fake-quantized with range [lo, hi] on <paramref name="format"/>.</summary>
    private static double Error(float[] x, int count, int k, List<(float[] W, int N)> weights, NumberFormat format, double lo, double hi)
    {
        var q = ActivationGrid.Of(format, lo, hi);
        var e = new float[count * k];
        for (int i = 0; i < count * k; i++) e[i] = q.Residual(x[i]);
        double total = 0;
        var gate = new object();
        foreach (var (w, n) in weights)
            Parallel.For(0, count, () => 0.0, (r, _, acc) =>
            {
                var y = new double[n];
                for (int j = 0; j < k; j++)
                {
                    double ej = e[r * k + j];
                    if (ej == 0) continue;
                    int off = j * n;
                    for (int o = 0; o < n; o++) y[o] += ej * w[off + o];
                }
                foreach (double v in y) acc += v * v;
                return acc;
            }, acc => { lock (gate) total += acc; });
        return total;
    }
}

/// <summary>The options of <see cref="ClipSearchPass"/>.</summary>
public sealed record ClipSearchOptions : PassOptions
{
    [Option("clip ratios tried (each a share of the calibrated range, in (0, 1])")]
    public IReadOnlyList<double> Grid { get; init; } = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5];

    [Option("sampled calibration rows per input", Min = 1)]
    public int Rows { get; init; } = 128;

    [Option("what a ratio is scored on: layer (each input's linear layers, float weights) or block (the LLaMA decoder block's output, " +
        "PrefixQuant's block-wise search: the four inputs of a block searched together by coordinate descent)", Choices = "layer|block")]
    public string Scope { get; init; } = "layer";

    [Option("calibration sequences per block (scope: block)", Min = 1)]
    public int Samples { get; init; } = 8;

    [Option("coordinate-descent sweeps over a block's four inputs (scope: block)", Min = 1)]
    public int Sweeps { get; init; } = 2;

    [Option("the weights a block computes with (scope: block): float, or each layer's weight rounded to nearest on its planned " +
        "integer grid", Choices = "float|rtn")]
    public string BlockWeights { get; init; } = "float";

    [Option("the block inputs searched on (scope: block): the float model's, or quantized — each block after the first reads the " +
        "previous block's output at the ratios (and weights) chosen for it, the targets staying the float model's outputs",
        Choices = "float|quantized")]
    public string BlockInputs { get; init; } = "float";

    public override string? Check()
    {
        if (Grid.Count == 0) return "parameter 'grid' must list at least one clip ratio";
        foreach (double r in Grid)
            if (!(r > 0 && r <= 1)) return $"parameter 'grid': {r} is not in (0, 1]";
        return null;
    }
}
