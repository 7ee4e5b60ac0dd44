using System.Globalization;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>
/// The block-wise clipping search (PrefixQuant's): per LLaMA decoder block, the clip ratios of its four static activation inputs
/// (q/k/v, o, gate/up, down) chosen by coordinate descent over a grid to minimise the block's output error
/// Σ ‖y(x; clipped) − y_float‖² on calibration sequences. The block runs in C# (<see cref="ClipBlock"/>) on the float model's block
/// inputs as ONNX Runtime computes them, with the prefix tokens' keys and values ahead in its cache; its float output is first
/// checked against ONNX Runtime's (a block the C# computation does not reproduce is refused). Weights stay float (the weights pass
/// runs after). Ratios multiply the ranges chosen by <c>ranges</c>.
/// </summary>
internal static class BlockClipSearch
{
    /// <summary>Largest relative difference between the C# block's float output and ONNX Runtime's that is accepted.</summary>
    public const double Tolerance = 1e-4;

    /// <summary>Searches every block of the model: <paramref name="maxSamples"/> calibration sequences, <paramref name="grid"/>,
    /// <paramref name="sweeps"/>, weights rounded or float (<paramref name="rounded"/>), and, with <paramref name="chained"/>, each
    /// block after the first on the previous block's output as the search left it (its ratios and weights: the quantized model's
    /// block inputs) instead of the float model's; <paramref name="statics"/> are the layers with static integer inputs; log lines
    /// start with <paramref name="who"/>; ranges go to <paramref name="ctx"/>'s plan.</summary>
    public static void Run(PassContext ctx, string who, IReadOnlyList<double> grid, int maxSamples, int sweeps, bool rounded,
        bool chained, List<LinearLayer> statics)
    {
        var blocks = ClipBlockGraph.Read(ctx.Model, ctx.Map, ctx.Plan, rounded, who);
        var names = blocks.SelectMany(b => new[] { b.Input.Name, b.Output.Name }).Distinct().ToList();
        var seen = names.ToDictionary(n => n, _ => new List<float[]>(), StringComparer.Ordinal);
        ctx.Calibrate(names, who, (name, data, _) =>
        {
            var list = seen[name];
            lock (list) if (list.Count < maxSamples) list.Add(data.ToArray());
        });
        var isStatic = statics.ToHashSet();
        double before = 0, after = 0;
        int clipped = 0, searched = 0;
        ClipBlockParts? previous = null;
        List<float[]>? carried = null;
        foreach (var b in blocks)
        {
            var xs = seen[b.Input.Name];
            bool chain = chained && previous is not null && ReferenceEquals(previous.Output, b.Input);
            if (chained && previous is not null && !chain)
                ctx.Log.Add($"{who}: {b.Name} does not read {previous.Name}'s output: searched on the float model's inputs");
            var r = Search(ctx, b, xs, seen[b.Output.Name], chain ? carried! : xs, grid, sweeps, isStatic, who, chained);
            (previous, carried) = (b, r.Outputs);
            before += r.Before;
            after += r.After;
            searched += r.Searched;
            clipped += r.Clipped;
            ctx.Log.Add(r.Line);
        }
        foreach (var l in statics.Where(l => !blocks.Any(b => b.Linears.Contains(l))))
            ctx.Log.Add($"{who}: {l.Name} is in no decoder block: its range is kept");
        string total = F($"squared block output error {before:0.####e0} → {after:0.####e0} ({Percent(before, after)}) summed over ") +
            $"{blocks.Count} blocks, computed with {(rounded ? "weights rounded to nearest on their planned grids" : "float weights")} " +
            $"on the {(chained ? "quantized" : "float")} model's block inputs";
        if (clipped == 0)
            ctx.Notice($"{who}: every block kept clip ratio 1 on its {searched} searched inputs: no ratio of the grid lowered the " +
                $"{total}");
        else ctx.Log.Add($"{who}: {clipped} of {searched} inputs clipped below their range; {total}");
    }

    private sealed record Outcome(double Before, double After, int Searched, int Clipped, string Line, List<float[]>? Outputs);

    /// <summary>Searches block <paramref name="b"/> on <paramref name="inputs"/> against the float outputs <paramref name="ys"/>; the
    /// float check runs on the float inputs <paramref name="xs"/>. With <paramref name="outputs"/> the block's outputs at the ratios
    /// chosen are returned.</summary>
    private static Outcome Search(PassContext ctx, ClipBlockParts b, List<float[]> xs, List<float[]> ys, List<float[]> inputs,
        IReadOnlyList<double> grid, int sweeps, HashSet<LinearLayer> statics, string who, bool outputs)
    {
        if (xs.Count == 0 || xs.Count != ys.Count)
            throw new InvalidOperationException($"{who}: {b.Name}: {xs.Count} inputs, {ys.Count} outputs");
        // The four inputs' readers (q/k/v, o, gate/up, down): searched when every reader is static integer (they share one QDQ).
        int[][] readers = [[0, 1, 2], [3], [4, 5], [6]];
        var bases = readers.Select(rs => rs.All(i => statics.Contains(b.Linears[i])) && ctx.Plan[b.Linears[rs[0]].Name] is var p
            && p.ActivationRange is { } r ? new ClipBase(p.ActivationFormat, r.Lo, r.Hi) : null).ToArray();
        var sequences = xs.Zip(ys).ToList();
        double floatErr = ClipBlockSearch.Run(b.Block, sequences, new ClipBase?[4], [], 1).FloatError;
        if (!(floatErr <= Tolerance))
            throw new BadInputException(F($"{who}: {b.Name} is not the LLaMA block the search computes: its float output in C# ") +
                F($"differs from ONNX Runtime's by {floatErr:0.###e0} of the block's contribution (> {Tolerance:0e0}); ") +
                "use scope: layer");
        var searched = b.Rounded ?? b.Block;
        var o = ClipBlockSearch.Run(searched, ReferenceEquals(inputs, xs) ? sequences : inputs.Zip(ys).ToList(), bases, grid, sweeps);
        int count = 0, clipped = 0;
        var parts = new List<string>();
        for (int j = 0; j < 4; j++)
        {
            if (bases[j] is not { } c)
            {
                parts.Add($"{ClipBlock.InputRoles[j]} not static");
                continue;
            }
            count++;
            if (o.Ratios[j] < 1) clipped++;
            parts.Add(F($"{ClipBlock.InputRoles[j]} {o.Ratios[j]:0.##}"));
            foreach (int i in readers[j])
            {
                var plan = ctx.Plan[b.Linears[i].Name];
                plan.ActivationRange = ((float)(c.Lo * o.Ratios[j]), (float)(c.Hi * o.Ratios[j]));
                plan.Reasons.Add(F($"{who}: activation range × {o.Ratios[j]:0.##} by {b.Name}'s output error ({o.Start:0.###e0} → ") +
                    F($"{o.Final:0.###e0} of its contribution)"));
            }
        }
        int d = b.Block.Shape.Hidden, tokens = xs.Sum(x => x.Length / d);
        string line = F($"{who}: {b.Name}: clip ratios {string.Join(", ", parts)}; block output error {o.Start:0.####e0} → ") +
            F($"{o.Final:0.####e0} ({Percent(o.Start, o.Final)}) of its contribution on {xs.Count} sequences ({tokens} tokens, ") +
            F($"prefix {b.Block.Prefix}); float C# block vs ONNX Runtime {floatErr:0.#e0}") +
            (b.Rounded is null ? "" : F($"; rounded weights alone {o.FloatError:0.####e0}"));
        if (clipped == 0 && o.Tried.Count > 0)
            line += F($"; least error at a ratio < 1: {o.Tried.Values.Min():0.####e0}");
        List<float[]>? ys2 = null;
        if (outputs)
        {
            var grids = bases.Select((c, j) => c?.At(o.Ratios[j])).ToArray();
            ys2 = inputs.Select(x => new float[x.Length]).ToList();
            Parallel.For(0, inputs.Count, s => searched.Forward(searched.NewState(inputs[s], inputs[s].Length / d), grids, ys2[s]));
        }
        return new Outcome(o.Start * o.Energy, o.Final * o.Energy, count, clipped, line, ys2);
    }

    private static string Percent(double before, double after) =>
        before > 0 ? F($"{(after - before) / before * 100:+0.0;-0.0;0.0} %") : "no error";

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
