using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// GPTQ for the weights pass within a memory budget (issue 22 item 10). Each distinct layer input needs its Hessian H = 2·XᵀX,
/// float64 K×K, accumulated over the calibration data: on a 1b LLaMA 22 × (3·2048² + 5632²) × 8 B = 7.8 GB. The inputs are
/// taken in graph order in groups whose Hessians fit <see cref="CalibrationOptions.HessianBytes"/> (an input past it is a group
/// alone); each group is one calibration run that accumulates only its inputs, then its layers are rounded and its Hessians
/// dropped before the next run. Each Hessian sees the same samples in the same order as in one run over all inputs, so the
/// sums, and the rounded weights, are bit-identical; the price is a calibration run per group (a segmented run stops after
/// the last segment the group reads).
/// </summary>
public static class GptqRounding
{
    /// <summary>Rounds <paramref name="layers"/> (integer MatMul/Gemm layers) with GPTQ into their plans; logs the runs it took.</summary>
    internal static void Run(PassContext ctx, IReadOnlyList<LinearLayer> layers, double damp, string pass)
    {
        if (ctx.CalibrationData is null) throw new Quantc.Onnx.BadInputException("GPTQ needs calibration data: give --calib DATA");
        if (layers.Count == 0)
        {
            ctx.Log.Add($"{pass}: GPTQ found no integer MatMul/Gemm layer to round (0 Hessians)");
            return;
        }
        long budget = (ctx.CalibrationOptions ?? new CalibrationOptions()).HessianBytes;
        var byInput = layers.GroupBy(l => l.Input.Name).Select(g => (Input: g.Key, K: (int)g.First().InFeatures, Layers: g.ToList()))
            .ToList();
        var groups = Groups(byInput.Select(i => HessianBytes(i.K)).ToList(), budget);
        int done = 0;
        for (int gi = 0; gi < groups.Count; gi++)
        {
            var group = byInput.GetRange(groups[gi].Start, groups[gi].Count);
            var hessians = group.ToDictionary(i => i.Input, i => new double[(long)i.K * i.K], StringComparer.Ordinal);
            ctx.Calibrate(group.Select(i => i.Input).ToList(), pass, (name, data, channels) =>
            {
                var h = hessians[name];
                lock (h) WeightQuantizer.AccumulateHessian(h, data, channels);
            });
            Quantc.Core.Diagnostics.MemoryTrace.Mark($"gptq Hessians {gi + 1}/{groups.Count}");
            foreach (var (input, k, inputLayers) in group)
            {
                // The factor is made in the Hessian's own array; the Hessian is then no longer needed.
                var factor = GptqFactor.Of(hessians[input], k, damp);
                hessians.Remove(input);
                foreach (var l in inputLayers)
                {
                    ctx.ReleaseLayerCopies();
                    var plan = ctx.Plan[l.Name];
                    plan.QuantizedWeight = WeightQuantizer.Gptq(Weights.ReadNk(l), (int)l.OutFeatures, k, factor, plan.WeightFormat.Grid!,
                        plan.GroupSize);
                    plan.WeightMethod = "gptq";
                    done++;
                }
            }
        }
        long total = byInput.Sum(i => HessianBytes(i.K));
        long largest = groups.Max(g => byInput.GetRange(g.Start, g.Count).Sum(i => HessianBytes(i.K)));
        ctx.Log.Add($"{pass}: GPTQ Hessians of {byInput.Count} inputs ({done} layers, {Mib(total)} MiB) in {groups.Count} calibration " +
            $"run{(groups.Count == 1 ? "" : "s")} of ≤ {Mib(largest)} MiB (budget {Mib(budget)} MiB)");
    }

    /// <summary>Consecutive runs of <paramref name="bytes"/> that each sum to at most <paramref name="budget"/> (an item past it is a run
    /// alone).</summary>
    public static List<(int Start, int Count)> Groups(IReadOnlyList<long> bytes, long budget)
    {
        var groups = new List<(int Start, int Count)>();
        int start = 0;
        long sum = 0;
        for (int i = 0; i < bytes.Count; i++)
        {
            if (i > start && sum + bytes[i] > budget)
            {
                groups.Add((start, i - start));
                start = i;
                sum = 0;
            }
            sum += bytes[i];
        }
        if (bytes.Count > start) groups.Add((start, bytes.Count - start));
        return groups;
    }

    private static long HessianBytes(int k) => 8L * k * k;

    private static long Mib(long bytes) => (bytes + (1 << 20) - 1) >> 20;
}
