using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// GPTQ for the weights pass within a memory budget (issue 22 item 10). Each distinct layer input needs its Hessian H = 2·XᵀX,
/// float64 K×K, accumulated over the calibration data: on a 1b LLaMA 22 × (3·2048² + 5632²) × 8 B = 7.8 GB. A Hessian is made when
/// its input's first sample arrives and, once its input has seen every sample (the end of the input's segment when the model runs
/// in segments, <see cref="Core.Runtime.SegmentedRun"/>; the end of the run otherwise), turned into the layers' rounded weights and
/// dropped, so one run holds the Hessians of one segment at a time. Where one segment's (or a whole-model run's) Hessians are more
/// than <see cref="CalibrationOptions.HessianBytes"/>, its inputs are split, in graph order, into chunks that fit (an input past
/// it is a chunk alone), and the data is run once per chunk. Each Hessian sees the same samples in the same order as in one run
/// over all inputs, so the sums, and the rounded weights, are bit-identical.
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
        var options = ctx.CalibrationOptions ?? new CalibrationOptions();
        var inputs = layers.GroupBy(l => l.Input.Name)
            .Select(g => new Input(g.Key, (int)g.First().InFeatures, g.ToList())).ToList();
        var segments = Core.Runtime.SegmentedRun.Plan(ctx.Model, options.SegmentBytes);
        var segmentOf = segments is null ? null : Core.Runtime.SegmentedRun.SegmentsOf(ctx.Model, segments, inputs.Select(i => i.Name));
        var runs = Runs(inputs.Select(i => i.Bytes).ToList(), inputs.Select(i => segmentOf?[i.Name] ?? 0).ToList(), options.HessianBytes);
        var byName = inputs.ToDictionary(i => i.Name, StringComparer.Ordinal);
        for (int r = 0; r < runs.Count; r++)
        {
            var live = new System.Collections.Concurrent.ConcurrentDictionary<string, double[]>(StringComparer.Ordinal);
            var left = new HashSet<string>(runs[r].Select(i => inputs[i].Name), StringComparer.Ordinal);
            void Finish(IReadOnlyList<string> names)
            {
                foreach (var input in inputs.Where(i => names.Contains(i.Name) && left.Remove(i.Name)))
                {
                    // On a model that spills, the garbage of the inputs before (their Hessians, the layers' copies) is collected before
                    // a large factor adds its K×K array (254 MB at K = 5632), and its Hessian's array before the layers' copies come.
                    bool large = ctx.Model.SpilledBytes > 0 && input.Bytes >= LargeFactorBytes;
                    if (large) Core.Runtime.MemoryTrim.Now();
                    // The factor is made in the Hessian's own array; the Hessian is then no longer needed.
                    var factor = GptqFactor.Of(live.GetOrAdd(input.Name, _ => input.NewHessian()), input.K, damp);
                    live.TryRemove(input.Name, out _);
                    if (large) Core.Runtime.MemoryTrim.Now();
                    foreach (var l in input.Layers)
                    {
                        ctx.ReleaseLayerCopies();
                        var plan = ctx.Plan[l.Name];
                        plan.QuantizedWeight = WeightQuantizer.Gptq(Weights.ReadNk(l), (int)l.OutFeatures, input.K, factor,
                            plan.WeightFormat.Grid!, plan.GroupSize);
                        plan.WeightMethod = "gptq";
                    }
                }
                // The segment's Hessians and factors are garbage now; on a model that spills they go before the next segment's come
                // (the GC, left alone, kept a block's worth past the next one: 1b quarot-w4a8 1.35 GB by block 2 instead of 0.93).
                ctx.ReleaseLayerCopies(now: true);
                Quantc.Core.Diagnostics.MemoryTrace.Mark($"gptq rounded, run {r + 1}/{runs.Count}");
            }
            ctx.Calibrate(runs[r].Select(i => inputs[i].Name).ToList(), pass, (name, data, channels) =>
            {
                var h = live.GetOrAdd(name, _ => byName[name].NewHessian());
                lock (h) WeightQuantizer.AccumulateLowerHessian(h, data, channels);
            }, Finish);
            if (left.Count > 0) Finish([.. left]);     // tensors the run never declared complete (none expected)
        }
        long held = runs.Max(run => run.GroupBy(i => segmentOf?[inputs[i].Name] ?? 0).Max(g => g.Sum(i => inputs[i].Bytes)));
        string inSegments = segments is null ? "" : $"; the model runs in {segments.Count} segments";
        ctx.Log.Add($"{pass}: GPTQ Hessians of {inputs.Count} inputs ({layers.Count} layers, {Mib(inputs.Sum(i => i.Bytes))} MiB) in " +
            $"{runs.Count} calibration run{(runs.Count == 1 ? "" : "s")}, ≤ {Mib(held)} MiB held at once " +
            $"(budget {Mib(options.HessianBytes)} MiB{inSegments})");
    }

    /// <summary>
    /// The calibration runs for inputs of Hessian sizes <paramref name="bytes"/> handed over in segments <paramref name="segment"/>:
    /// each segment's inputs are cut, in order, into chunks of at most <paramref name="budget"/> bytes (an input past it is a chunk
    /// alone), and run r takes every segment's r-th chunk. Each run lists input indices in ascending order.
    /// </summary>
    public static List<List<int>> Runs(IReadOnlyList<long> bytes, IReadOnlyList<int> segment, long budget)
    {
        var runs = new List<List<int>>();
        foreach (var members in Enumerable.Range(0, bytes.Count).GroupBy(i => segment[i]))
        {
            int chunk = 0;
            long sum = 0;
            bool any = false;
            foreach (int i in members)
            {
                if (any && sum + bytes[i] > budget)
                {
                    chunk++;
                    sum = 0;
                }
                if (runs.Count == chunk) runs.Add([]);
                runs[chunk].Add(i);
                sum += bytes[i];
                any = true;
            }
        }
        foreach (var run in runs) run.Sort();
        return runs;
    }

    /// <summary>Hessians from this size (64 MiB: K ≥ 2897) get a collection before and after their factor on a model that spills.</summary>
    private const long LargeFactorBytes = 64L << 20;

    private static long Mib(long bytes) => (bytes + (1 << 20) - 1) >> 20;

    private sealed record Input(string Name, int K, List<LinearLayer> Layers)
    {
        public long Bytes => 8L * K * K;

        public double[] NewHessian() => new double[(long)K * K];
    }
}
