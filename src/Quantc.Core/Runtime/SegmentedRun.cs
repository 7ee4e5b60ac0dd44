using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Runtime;

/// <summary>
/// Runs a model too large to hold in ONNX Runtime at once one segment at a time: the main graph's nodes, in order, are cut
/// into runs that each read at most about a budget of weight bytes, at the places where the fewest intermediate values cross
/// (in a transformer: after a block, where only the residual stream and what the blocks share — the mask, the rotary
/// tables — cross). Each segment gets its own session, all samples go through it, the values later segments read are kept
/// (per sample), and the session is closed before the next opens: ONNX Runtime never holds more than one segment's weights.
/// The same nodes run on the same inputs, so each value is what a whole-model run computes, up to the graph optimizations
/// ONNX Runtime applies across a cut (none on the reference models' residual stream).
/// </summary>
public static class SegmentedRun
{
    /// <summary>One segment: nodes [Start, End) of the main graph; the values it reads from earlier segments and keeps for later ones.
    /// </summary>
    public sealed record Segment(int Start, int End, IReadOnlyList<string> Carried, IReadOnlyList<string> Kept);

    /// <summary>
    /// The segments of <paramref name="model"/> with at most about <paramref name="budgetBytes"/> of weights each (a node reading more
    /// is a segment alone); null when the whole model's weights fit the budget or the graph's node list is not in dataflow order.
    /// </summary>
    public static IReadOnlyList<Segment>? Plan(Model model, long budgetBytes)
    {
        var g = model.Graph;
        var nodes = g.Nodes;
        int n = nodes.Count;
        var index = new Dictionary<Node, int>(n, ReferenceEqualityComparer.Instance);
        for (int i = 0; i < n; i++) index[nodes[i]] = i;
        var weight = new long[n];
        var counted = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var lastRead = new Dictionary<Value, int>(ReferenceEqualityComparer.Instance);
        for (int j = 0; j < n; j++)
            foreach (var v in Graph.Dependencies(nodes[j]))
            {
                if (v.IsInitializer && counted.Add(v)) weight[j] += v.Initializer!.ByteLength;
                if (v.Producer is not { } p || !index.TryGetValue(p, out int a)) continue;
                if (a >= j) return null;
                lastRead[v] = Math.Max(lastRead.GetValueOrDefault(v), j);
            }
        if (weight.Sum() <= budgetBytes) return null;

        // crossing[p]: intermediate values produced before node p and read at or after it (a cut before p must carry them).
        var crossing = new int[n + 1];
        foreach (var (v, last) in lastRead)
        {
            crossing[index[v.Producer!] + 1]++;
            crossing[last + 1]--;
        }
        for (int p = 1; p <= n; p++) crossing[p] += crossing[p - 1];

        var starts = new List<int> { 0 };
        long acc = 0;
        for (int j = 0; j < n; j++)
        {
            acc += weight[j];
            int s = starts[^1];
            if (acc <= budgetBytes || j == s) continue;
            // Cut in the later half of the run, where the fewest values cross (the latest such place).
            int best = j;
            for (int q = j; q >= Math.Max(s + 1, s + (j - s) / 2); q--)
                if (crossing[q] < crossing[best]) best = q;
            starts.Add(best);
            acc = 0;
            for (int q = best; q <= j; q++) acc += weight[q];
        }
        starts.Add(n);

        var segments = new List<Segment>();
        for (int k = 0; k + 1 < starts.Count; k++)
        {
            int start = starts[k], end = starts[k + 1];
            var carried = new List<string>();
            var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
            for (int j = start; j < end; j++)
                foreach (var v in Graph.Dependencies(nodes[j]))
                    if (v.Producer is { } p && index.TryGetValue(p, out int a) && a < start && seen.Add(v)) carried.Add(v.Name);
            var kept = new List<string>();
            for (int j = start; j < end; j++)
                foreach (var v in nodes[j].Outputs)
                    if (v is not null && lastRead.TryGetValue(v, out int last) && last >= end) kept.Add(v.Name);
            segments.Add(new Segment(start, end, carried, kept));
        }
        return segments;
    }

    /// <summary>The segment in which each of <paramref name="names"/> (values of the main graph) is handed over by <see cref="Run"/>:
    /// its producer's (graph inputs and initializers: the first).</summary>
    public static Dictionary<string, int> SegmentsOf(Model model, IReadOnlyList<Segment> segments, IEnumerable<string> names)
    {
        var g = model.Graph;
        var segmentOf = SegmentOfNodes(segments, g.Nodes.Count);
        var index = new Dictionary<Node, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < g.Nodes.Count; i++) index[g.Nodes[i]] = i;
        var of = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var v = g.Find(name) ?? throw new BadInputException($"tensor '{name}' is not in the model");
            of[name] = v.Producer is { } p && index.TryGetValue(p, out int i) ? segmentOf[i] : 0;
        }
        return of;
    }

    /// <summary>
    /// Runs every sample through <paramref name="segments"/> in turn and hands each of <paramref name="wanted"/> (values of the main
    /// graph: node outputs or graph inputs) to <paramref name="consume"/> (name, value, sample), in sample order for each name and in
    /// parallel for different names of one sample. The value is valid only during the call. <paramref name="completed"/> gets the
    /// names of each segment once all samples of them were handed over, after the segment's session is closed and before the next
    /// opens (a consumer can finish with them and free what it gathered).
    /// </summary>
    public static void Run(Model model, IReadOnlyList<Segment> segments, IReadOnlyList<string> wanted,
        IReadOnlyList<CalibrationSample> samples, Action<string, OrtValue, int> consume, IProgress<(int Done, int Total)>? progress = null,
        Action<IReadOnlyList<string>>? completed = null)
    {
        var g = model.Graph;
        var (proto, payload) = model.ToProto();
        if (proto.Graph.Node.Count != g.Nodes.Count)
            throw new InvalidOperationException("the model's proto does not list the graph's nodes one to one");
        var wantedIn = new List<string>[segments.Count];
        for (int k = 0; k < segments.Count; k++) wantedIn[k] = [];
        foreach (var (name, k) in SegmentsOf(model, segments, wanted.Distinct(StringComparer.Ordinal))) wantedIn[k].Add(name);
        // The last segment that reads each kept value, so that it is released as soon as it is no longer needed.
        var lastUse = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int k = 0; k < segments.Count; k++) foreach (var c in segments[k].Carried) lastUse[c] = k;
        // Segments after the last one with a wanted value only feed each other: not run.
        int lastWanted = Array.FindLastIndex(wantedIn, w => w.Count > 0);

        var store = new Dictionary<string, OrtValue>[samples.Count];
        for (int i = 0; i < samples.Count; i++) store[i] = new(StringComparer.Ordinal);
        int total = segments.Count * samples.Count, done = 0;
        bool customOps = CustomOps.IsUsedBy(model);
        try
        {
            for (int k = 0; k < segments.Count; k++)
            {
                // The previous segment's session is closed here (disposed with its iteration).
                if (k > 0 && wantedIn[k - 1].Count > 0) completed?.Invoke(wantedIn[k - 1]);
                var seg = segments[k];
                if (k > lastWanted || (seg.Kept.Count == 0 && wantedIn[k].Count == 0))
                {
                    // Nothing of it is wanted or read later by a segment that is run (the head after the last wanted tensor).
                    progress?.Report((done += samples.Count, total));
                    continue;
                }
                var (segProto, segPayload) = SegmentProto(proto, payload, seg, wantedIn[k], store[0]);
                var outputs = segProto.Graph.Output.Select(o => o.Name).ToList();
                var inputNames = segProto.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
                using var trim = new MemoryTrim();          // disposed after the session
                using var session = OrtModel.Open(segProto, segPayload, model.File?.Directory, customOps);
                Diagnostics.MemoryTrace.Mark($"segment {k + 1}/{segments.Count} open");
                var wantedSet = wantedIn[k].ToHashSet(StringComparer.Ordinal);
                var keptSet = seg.Kept.ToHashSet(StringComparer.Ordinal);
                var handed = Enumerable.Range(0, outputs.Count).Where(j => wantedSet.Contains(outputs[j])).ToList();
                // Pipelined as the whole-model calibration is: sample i's values are handed over (in parallel over names) while
                // ONNX Runtime runs sample i + 1; at most two samples' values are alive besides the kept ones.
                Task? handing = null;
                IDisposableReadOnlyCollection<OrtValue>? pending = null;
                void Release(IDisposableReadOnlyCollection<OrtValue>? r)
                {
                    if (r is null) return;
                    for (int j = 0; j < outputs.Count; j++) if (!keptSet.Contains(outputs[j])) r[j].Dispose();
                }
                try
                {
                    for (int i = 0; i < samples.Count; i++)
                    {
                        var fed = CalibrationInputs.ToOrt(samples[i]);
                        IDisposableReadOnlyCollection<OrtValue> results;
                        try
                        {
                            var inputs = fed.Where(x => inputNames.Contains(x.Name)).ToList();
                            inputs.AddRange(seg.Carried.Select(c => (c, store[i][c])));
                            results = OrtModel.Run(session, inputs, outputs, "model");
                        }
                        finally
                        {
                            foreach (var (_, v) in fed) v.Dispose();
                        }
                        for (int j = 0; j < outputs.Count; j++) if (keptSet.Contains(outputs[j])) store[i][outputs[j]] = results[j];
                        handing?.Wait();
                        Release(pending);
                        if (handing is not null) progress?.Report((++done, total));
                        int sample = i;
                        pending = results;
                        handing = Task.Run(() => Parallel.ForEach(handed, j => consume(outputs[j], results[j], sample)));
                    }
                    handing?.Wait();
                    progress?.Report((++done, total));
                }
                catch (AggregateException e) when (e.Flatten().InnerExceptions.Count == 1)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.Flatten().InnerExceptions[0]).Throw();
                }
                finally
                {
                    try { handing?.Wait(); } catch (AggregateException) { }
                    Release(pending);
                }
                foreach (var s in store)
                    foreach (var name in s.Keys.Where(c => lastUse.GetValueOrDefault(c, -1) <= k).ToList())
                    {
                        s[name].Dispose();
                        s.Remove(name);
                    }
            }
            if (wantedIn[^1].Count > 0) completed?.Invoke(wantedIn[^1]);
        }
        finally
        {
            foreach (var s in store) foreach (var v in s.Values) v.Dispose();
        }
    }

    private static int[] SegmentOfNodes(IReadOnlyList<Segment> segments, int nodes)
    {
        var of = new int[nodes];
        for (int k = 0; k < segments.Count; k++) for (int i = segments[k].Start; i < segments[k].End; i++) of[i] = k;
        return of;
    }

    /// <summary>The proto of one segment: its nodes, the initializers and graph inputs they read, its carried values as inputs (typed
    /// from the first sample's kept values), and its kept and wanted values as outputs.</summary>
    private static (ModelProto, Func<TensorProto, TensorData?>) SegmentProto(ModelProto full, Func<TensorProto, TensorData?> payload,
        Segment seg, IReadOnlyList<string> wanted, IReadOnlyDictionary<string, OrtValue> firstSample)
    {
        var fg = full.Graph;
        var graph = new GraphProto { Name = fg.Name };
        var read = new HashSet<string>(StringComparer.Ordinal);
        var produced = new HashSet<string>(StringComparer.Ordinal);
        for (int i = seg.Start; i < seg.End; i++)
        {
            graph.Node.Add(fg.Node[i]);
            CollectReads(fg.Node[i], read);
            produced.UnionWith(fg.Node[i].Output);
        }
        read.UnionWith(wanted.Where(w => !produced.Contains(w)));   // a wanted graph input or initializer comes through segment 0
        var originals = new Dictionary<TensorProto, TensorProto>(ReferenceEqualityComparer.Instance);
        foreach (var t in fg.Initializer.Where(t => read.Contains(t.Name)))
        {
            // A tensor whose bytes the session will write into the proto is copied, so the full proto stays as it is.
            bool inlined = t.DataLocation == TensorProto.Types.DataLocation.External && t.ExternalData.Count == 0;
            var own = inlined ? t.Clone() : t;
            if (inlined) originals[own] = t;
            graph.Initializer.Add(own);
        }
        graph.Input.AddRange(fg.Input.Where(i => read.Contains(i.Name)));
        foreach (var c in seg.Carried) graph.Input.Add(TypedInput(c, firstSample[c]));
        graph.ValueInfo.AddRange(fg.ValueInfo.Where(v => produced.Contains(v.Name)));
        foreach (var name in seg.Kept.Concat(wanted).Distinct(StringComparer.Ordinal))
            graph.Output.Add(new ValueInfoProto { Name = name });

        var saved = full.Graph;
        full.Graph = null;
        var model = full.Clone();
        full.Graph = saved;
        model.Graph = graph;
        return (model, t => payload(originals.GetValueOrDefault(t, t)));
    }

    private static void CollectReads(NodeProto node, HashSet<string> read)
    {
        read.UnionWith(node.Input.Where(i => i.Length > 0));
        foreach (var a in node.Attribute)
        {
            if (a.G is { } sg) foreach (var sn in sg.Node) CollectReads(sn, read);
            foreach (var g in a.Graphs) foreach (var sn in g.Node) CollectReads(sn, read);
        }
    }

    private static ValueInfoProto TypedInput(string name, OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var shape = new TensorShapeProto();
        for (int d = 0; d < info.Shape.Length; d++) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_d{d}" });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)info.ElementDataType, Shape = shape } },
        };
    }
}

/// <summary>
/// On dispose, collects the managed heap aggressively (compacting and giving free memory back: a segment's proto bytes and
/// inlined weights are garbage once its session is open, a pass's float copies once it ends) and hands the C heap's free
/// memory back to the system (glibc malloc_trim; Linux only): a closed session's weights and buffers are freed into
/// malloc's arenas, which otherwise keep them resident.
/// </summary>
public sealed partial class MemoryTrim : IDisposable
{
    /// <summary>Collects and trims now.</summary>
    public static void Now() => new MemoryTrim().Dispose();

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int malloc_trim(nuint pad);

    public void Dispose()
    {
        // Aggressive: compacts every generation, the large-object heap included, and decommits what is left free.
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        if (!OperatingSystem.IsLinux()) return;
        try { malloc_trim(0); }
        catch (EntryPointNotFoundException) { }
        catch (DllNotFoundException) { }
    }
}
