using Quantc.Core.Pipeline;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>One quantized input of a <see cref="ClipBlock"/>: its format and the range the clip ratios multiply.</summary>
public sealed record ClipBase(NumberFormat Format, float Lo, float Hi)
{
    public ActivationGrid At(double ratio) => ActivationGrid.Of(Format, Lo * ratio, Hi * ratio);
}

/// <summary>What the search found for one block. Errors are Σ‖y − y_float‖² over the sequences divided by Σ‖y_float − x‖² (the
/// block's contribution to the residual stream).</summary>
/// <param name="FloatError">The block without quantizers against the targets (how well the C# block reproduces them).</param>
/// <param name="Start">With every ratio 1.</param>
/// <param name="Final">With <paramref name="Ratios"/>.</param>
/// <param name="Ratios">The ratio chosen per input (1 for an input not searched).</param>
/// <param name="Tried">Every (input, ratio) evaluated with the error it gave.</param>
/// <param name="Energy">Σ‖y_float − x‖².</param>
public sealed record ClipBlockOutcome(double FloatError, double Start, double Final, double[] Ratios,
    IReadOnlyDictionary<(int Input, double Ratio), double> Tried, double Energy);

/// <summary>
/// PrefixQuant's block-wise clipping search: the ratios of a block's quantized inputs (<see cref="ClipBlock.InputRoles"/>) chosen by
/// coordinate descent over a grid — input by input in stage order, the others fixed, the ratio of least block output error kept
/// (ties keep the current one), repeated for up to <c>sweeps</c> passes or until no ratio moves.
/// </summary>
public static class ClipBlockSearch
{
    /// <param name="block">The block.</param>
    /// <param name="sequences">Block inputs x [t, Hidden] with the float block's outputs y [t, Hidden].</param>
    /// <param name="bases">Per input its base range, or null for an input left float.</param>
    /// <param name="grid">The ratios tried.</param>
    /// <param name="sweeps">Most passes over the inputs.</param>
    public static ClipBlockOutcome Run(ClipBlock block, IReadOnlyList<(float[] X, float[] Y)> sequences, ClipBase?[] bases,
        IReadOnlyList<double> grid, int sweeps)
    {
        if (sequences.Count == 0) throw new ArgumentException("no sequences");
        if (bases.Length != 4) throw new ArgumentException("four inputs: q/k/v, o, gate/up, down");
        int d = block.Shape.Hidden;
        var states = sequences.Select(s => block.NewState(s.X, s.X.Length / d)).ToArray();
        var outs = sequences.Select(s => new float[s.X.Length]).ToArray();
        double energy = 0;
        foreach (var (x, y) in sequences)
            for (int i = 0; i < x.Length; i++) energy += (double)(y[i] - x[i]) * (y[i] - x[i]);
        energy = Math.Max(energy, 1e-30);
        double Error(ActivationGrid?[] grids, int from)
        {
            var errs = new double[states.Length];
            Parallel.For(0, states.Length, s =>
            {
                block.Finish(states[s], grids, from, outs[s]);
                var y = sequences[s].Y;
                double e = 0;
                for (int i = 0; i < y.Length; i++) e += (double)(outs[s][i] - y[i]) * (outs[s][i] - y[i]);
                errs[s] = e;
            });
            return errs.Sum() / energy;
        }
        void Begin(ActivationGrid?[] grids, int input) => Parallel.For(0, states.Length, s => block.Begin(states[s], grids, input));

        var none = new ActivationGrid?[4];
        Begin(none, 0);
        double floatErr = Error(none, 0);
        var ratios = new double[] { 1, 1, 1, 1 };
        var grids = bases.Select(b => b?.At(1)).ToArray();
        Begin(grids, 0);
        double start = Error(grids, 0), current = start;
        var tried = new Dictionary<(int, double), double>();
        for (int sweep = 0; sweep < sweeps; sweep++)
        {
            bool moved = false;
            for (int j = 0; j < 4; j++)
            {
                if (bases[j] is not { } b) continue;
                Begin(grids, j);
                double best = current, bestRatio = ratios[j];
                foreach (double c in grid)
                {
                    if (c == ratios[j]) continue;
                    var g = (ActivationGrid?[])grids.Clone();
                    g[j] = b.At(c);
                    double e = Error(g, j);
                    tried[(j, c)] = e;
                    if (e < best) (best, bestRatio) = (e, c);
                }
                if (bestRatio == ratios[j]) continue;
                moved = true;
                ratios[j] = bestRatio;
                grids[j] = b.At(bestRatio);
                current = best;
            }
            if (!moved) break;
        }
        return new ClipBlockOutcome(floatErr, start, current, ratios, tried, energy);
    }
}
