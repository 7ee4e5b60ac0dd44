using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Calibration;

/// <summary>Options of a calibration run.</summary>
public sealed record CalibrationOptions
{
    /// <summary>Histogram bins per tensor (≥ 2048).</summary>
    public int HistogramBins { get; init; } = 2048;

    /// <summary>
    /// Most bytes of exposed activations one run may hold; tensors are split into groups that each
    /// fit, and the data is run once per group. Memory stays bounded however many tensors there are.
    /// </summary>
    public long GroupBytes { get; init; } = 1L << 30;

    /// <summary>
    /// A model with more weight bytes than this runs in segments of about this many (<see cref="Runtime.SegmentedRun"/>): ONNX Runtime
    /// then never holds the whole model. <see cref="long.MaxValue"/> always runs it whole.
    /// </summary>
    public long SegmentBytes { get; init; } = DefaultSegmentBytes;

    /// <summary>The default of <see cref="SegmentBytes"/>: 256 MiB.</summary>
    public const long DefaultSegmentBytes = 256L << 20;

    /// <summary>
    /// Most bytes of GPTQ Hessians (float64 K×K per distinct layer input) one calibration run accumulates; the inputs past it are
    /// accumulated in further runs over the same samples, with the same sums. The default, 512 MiB, keeps a 1b model's GPTQ under
    /// the 1.5 GB goal: with it come the ≈0.5 GB a segmented run holds and, while an input's factor is made, one more K×K array
    /// (254 MB for a 5632-wide input).
    /// </summary>
    public long HessianBytes { get; init; } = 512L << 20;
}

/// <summary>
/// Runs the float model in ONNX Runtime on calibration samples with the tensors that passes need
/// exposed as extra outputs, and folds every batch into streaming <see cref="TensorStats"/>.
/// </summary>
public static class Calibrator
{
    /// <summary>Collects statistics of <paramref name="tensors"/> (float tensors of the model) over <paramref name="samples"/>.</summary>
    /// <remarks><paramref name="observe"/> (tensor, one sample's data as float, channels) sees every tensor's raw data in sample order; it
    /// is called in parallel for different tensors. <paramref name="completed"/> gets tensors once <paramref name="observe"/> has seen
    /// all their samples, before the run goes on: each segment's of a model run in segments, each group's of a whole one.</remarks>
    public static Dictionary<string,
        TensorStats> Collect(Model model, IReadOnlyList<string> tensors, IReadOnlyList<CalibrationSample> samples,
        CalibrationOptions? options = null, IProgress<(int Done, int Total)>? progress = null, Action<string, ReadOnlySpan<float>,
            int>? observe = null, Action<IReadOnlyList<string>>? completed = null)
    {
        options ??= new CalibrationOptions();
        if (samples.Count == 0) throw new BadInputException("no calibration samples");
        foreach (var t in tensors)
        {
            var v = model.Graph.Find(t) ?? throw new BadInputException($"calibration tensor '{t}' is not in the model");
            if (v.ElementType is not (0 or (int)DT.Float or (int)DT.Float16))
                throw new BadInputException($"calibration tensor '{t}' is {DataTypes.Name(v.ElementType)}, not a float tensor");
        }

        var stats = tensors.Distinct().ToDictionary(t => t, t => new TensorStats(t, options.HistogramBins), StringComparer.Ordinal);
        if (SegmentedRun.Plan(model, options.SegmentBytes) is { } segments)
        {
            SegmentedRun.Run(model, segments, stats.Keys.ToList(), samples,
                (name, value, sample) => Fold(stats[name], value, sample, observe), progress, completed);
            return stats;
        }
        var groups = Group(model, stats.Keys.ToList(), samples, options.GroupBytes);
        int total = groups.Count * samples.Count, done = 0;
        for (int gi = 0; gi < groups.Count; gi++)
        {
            if (gi > 0) completed?.Invoke(groups[gi - 1]);     // the previous group's session is closed
            var group = groups[gi];
            using var session = OrtModel.CreateSession(model, group);
            // Pipelined: while sample i's activations are folded into the statistics (in parallel over
            // tensors), ONNX Runtime already runs sample i + 1. At most two samples' activations are alive.
            Task? folding = null;
            IDisposable? pending = null;
            try
            {
                for (int i = 0; i < samples.Count; i++)
                {
                    var inputs = CalibrationInputs.ToOrt(samples[i]);
                    IDisposableReadOnlyCollection<OrtValue> outputs;
                    try
                    {
                        outputs = OrtModel.Run(session, inputs, group, "model");
                    }
                    finally
                    {
                        foreach (var (_, v) in inputs) v.Dispose();
                    }
                    folding?.Wait();
                    pending?.Dispose();
                    progress?.Report((done += folding is null ? 0 : 1, total));
                    int sample = i;
                    var current = outputs;
                    pending = current;
                    folding = Task.Run(() => Parallel.For(0, group.Count, k => Fold(stats[group[k]], current[k], sample, observe)));
                }
                folding?.Wait();
                progress?.Report((++done, total));
            }
            catch (AggregateException e) when (e.InnerExceptions.Count == 1)
            {
                var inner = e.InnerExceptions[0] is AggregateException { InnerExceptions.Count: 1 } a
                    ? a.InnerExceptions[0] : e.InnerExceptions[0];
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner).Throw();
                throw;
            }
            finally
            {
                try { folding?.Wait(); } catch (AggregateException) { }
                pending?.Dispose();
            }
        }
        if (groups.Count > 0) completed?.Invoke(groups[^1]);
        return stats;
    }

    private static void Fold(TensorStats s, OrtValue value, int sample, Action<string, ReadOnlySpan<float>, int>? observe)
    {
        var info = value.GetTensorTypeAndShape();
        var shape = info.Shape;
        int channels = shape.Length == 0 ? 1 : (int)shape[^1];
        if (channels == 0) return;
        if (info.ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
        {
            s.Add(value.GetTensorDataAsSpan<float>(), channels, sample);
            observe?.Invoke(s.Name, value.GetTensorDataAsSpan<float>(), channels);
        }
        else if (info.ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16)
        {
            var h = value.GetTensorDataAsSpan<Float16>();
            var f = new float[h.Length];
            for (int i = 0; i < h.Length; i++) f[i] = (float)h[i];
            s.Add(f, channels, sample);
            observe?.Invoke(s.Name, f, channels);
        }
        else throw new BadInputException($"calibration tensor '{s.Name}' is {info.ElementDataType}, not float");
    }

    /// <summary>Splits tensors into groups whose activations fit <paramref name="budget"/> bytes for the largest sample.</summary>
    /// <remarks>Every group is one more run of the model over all samples, so the estimate must not be wildly high: a dimension named
    /// as one of a graph input's (batch_size, sequence_length) takes the largest size the samples give it; another unknown dimension
    /// counts as the sample's token count, that of its token input (input_ids) where it has one — not of a recurrent state fed
    /// beside it (a Mamba model's 1 × 1024 × 16 SSM states made every tensor count 32 times, and quamba ran its model 27 times).
    /// A tensor of unknown shape counts as tokens × 4096.</remarks>
    internal static List<List<string>> Group(Model model, List<string> tensors, IReadOnlyList<CalibrationSample> samples, long budget)
    {
        static long Elements(long[] shape) => shape.Aggregate(1L, (a, b) => a * Math.Max(b, 1));
        long tokens = samples.Max(s => s.Inputs.Any(kv => CalibrationInputs.IsTokenInput(kv.Key))
            ? s.Inputs.Where(kv => CalibrationInputs.IsTokenInput(kv.Key)).Max(kv => Elements(kv.Value.Shape))
            : s.Inputs.Values.Select(x => Elements(x.Shape)).DefaultIfEmpty(1).Max());
        var named = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var input in model.Graph.Inputs)
        {
            var dims = input.Type?.TensorType?.Shape?.Dim;
            if (dims is null) continue;
            foreach (var s in samples)
                if (s.Inputs.TryGetValue(input.Name, out var fed) && fed.Shape.Length == dims.Count)
                    for (int d = 0; d < dims.Count; d++)
                        if (dims[d].HasDimParam && dims[d].DimParam.Length > 0)
                            named[dims[d].DimParam] = Math.Max(named.GetValueOrDefault(dims[d].DimParam), fed.Shape[d]);
        }
        var groups = new List<List<string>>();
        var cur = new List<string>();
        long curBytes = 0;
        foreach (var t in tensors)
        {
            var dims = model.Graph.Find(t)!.Type?.TensorType?.Shape?.Dim;
            long bytes = 4L * (dims is null ? tokens * 4096 : dims.Aggregate(1L, (a, d) => a * Math.Max(1,
                d.HasDimValue ? d.DimValue : d.HasDimParam && named.TryGetValue(d.DimParam, out long n) ? n : tokens)));
            if (cur.Count > 0 && curBytes + bytes > budget)
            {
                groups.Add(cur);
                cur = [];
                curBytes = 0;
            }
            cur.Add(t);
            curBytes += bytes;
        }
        if (cur.Count > 0) groups.Add(cur);
        return groups;
    }
}
