using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using OrtType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace Quantc.Core.Verification;

/// <summary>Error of one model output.</summary>
public sealed record OutputError(string Name, double SqnrDb, double Cosine, double MaxAbsError, long Elements)
{
    /// <summary>With an exact reference: the compiled output against the original's float64 evaluation (dB).</summary>
    public double? SqnrVsExactDb { get; init; }

    /// <summary>With an exact reference: the float32 original against its own float64 evaluation (dB) — its float32 noise floor.</summary>
    public double? OriginalNoiseSqnrDb { get; init; }

    /// <summary>Compiled values that are NaN, or infinite where the original's are not the same infinity.</summary>
    public long NonFinite { get; init; }
}

/// <summary>Error of one intermediate tensor mapped between the models, in the compiled graph's order.</summary>
public sealed record LayerError(int Order, string CompiledName, string OriginalName, string Op, double SqnrDb, double Cosine,
    double MaxAbsError,
    double RangeMin = double.NaN, double RangeMax = double.NaN);

/// <summary>Next-token metrics, when the model has a logits output and the data has tokens.</summary>
public sealed record LogitsMetrics(double Top1Agreement, double OriginalPerplexity, double CompiledPerplexity, long ScoredTokens);

/// <summary>What <c>quantc verify</c> found.</summary>
public sealed record VerifyReport(int Samples, IReadOnlyList<OutputError> Outputs, LogitsMetrics? Logits, IReadOnlyList<LayerError> Layers)
{
    /// <summary>
    /// Every result that is not a finite number — compiled outputs with NaN/∞ values the original does not have, a NaN
    /// cosine or SQNR, a perplexity that is not finite — one sentence each; a gate must fail on any of them.
    /// </summary>
    public IReadOnlyList<string> NonFinite()
    {
        var found = new List<string>();
        foreach (var o in Outputs)
        {
            if (o.NonFinite > 0)
                found.Add($"output '{o.Name}': {o.NonFinite} of {o.Elements} compiled values are NaN, or infinite where the original's " +
                $"are not");
            else if (double.IsNaN(o.SqnrDb) || double.IsNaN(o.Cosine))
                found.Add(string.Create(CultureInfo.InvariantCulture, $"output '{o.Name}': SQNR {Db(o.SqnrDb)} dB, cosine {o.Cosine}"));
        }
        if (Logits is { ScoredTokens: > 0 } l)
        {
            if (!double.IsFinite(l.OriginalPerplexity))
                found.Add(string.Create(CultureInfo.InvariantCulture, $"the original model's perplexity is {l.OriginalPerplexity}"));
            if (!double.IsFinite(l.CompiledPerplexity))
                found.Add(string.Create(CultureInfo.InvariantCulture, $"the compiled model's perplexity is {l.CompiledPerplexity}"));
        }
        return found;
    }

    /// <summary>Decibels as printed: two decimals, "inf" / "-inf", "NaN".</summary>
    public static string Db(double v) => double.IsPositiveInfinity(v) ? "inf" : double.IsNegativeInfinity(v) ? "-inf"
        : v.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>Greedy decoding of both models through their KV cache from the first token of the data (decoder models with token
    /// data).</summary>
    public GreedyMatch? Greedy { get; init; }
}

/// <summary>Options of a verification run.</summary>
public sealed record VerifyOptions
{
    /// <summary>Also compare intermediate tensors (per-layer localisation).</summary>
    public bool PerLayer { get; init; } = true;

    /// <summary>Most bytes of exposed intermediate tensors held per run.</summary>
    public long GroupBytes { get; init; } = 512L << 20;

    /// <summary>Name of the logits output.</summary>
    public string LogitsOutput { get; init; } = "logits";

    /// <summary>
    /// The original model converted to float64 (<see cref="Float64Model"/>, on a second load of it): each output is also
    /// compared with this exact evaluation, and so is the float32 original, whose own error is the noise floor below
    /// which a compiled model's differences are float32 rounding rather than a change of function.
    /// </summary>
    public Model? ExactReference { get; init; }

    /// <summary>
    /// A model with more weight bytes than this is run in segments of about this many (<see cref="SegmentedRun"/>), all samples
    /// through one segment before the next; <see cref="long.MaxValue"/> always runs whole models.
    /// </summary>
    public long SegmentBytes { get; init; } = Calibration.CalibrationOptions.DefaultSegmentBytes;

    /// <summary>Tokens both models generate greedily from the data's first token, compared (0: not done).</summary>
    public int GreedySteps { get; init; } = 64;

    /// <summary>
    /// Greedy decoding runs a model with more weight bytes than this in segments of about this many, each reopened for every
    /// token; null: <see cref="SegmentBytes"/> (measured on the 1b reference llama: segments of three times that, 768 MiB, took
    /// verify's peak from 1.03 to 1.59 GB).
    /// </summary>
    public long? DecodeSegmentBytes { get; init; }

    /// <summary>At most this many greedy tokens when either model decodes in segments (each token reads all of its weights again).
    /// </summary>
    public int SegmentedGreedySteps { get; init; } = 16;

    internal long DecodeBudget => DecodeSegmentBytes ?? SegmentBytes;
}

/// <summary>
/// Runs the original and the compiled model in ONNX Runtime on the same data and measures the
/// error of every output and — mapped by provenance, then by name — of every intermediate float
/// tensor, so the report shows where error enters and how it grows.
/// </summary>
public static class Verifier
{
    /// <summary>Compares <paramref name="compiled"/> against <paramref name="original"/> on <paramref name="samples"/> (tokens per sample
    /// for perplexity, optional).</summary>
    public static VerifyReport Run(Model original, Model compiled, IReadOnlyList<CalibrationSample> samples,
        IReadOnlyList<long[]>? tokens = null, VerifyOptions? options = null, IProgress<(int Done, int Total)>? progress = null)
    {
        options ??= new VerifyOptions();
        if (samples.Count == 0) throw new BadInputException("no verification data");
        var outputs = original.Graph.Outputs.Select(v => v.Name).ToList();
        foreach (var o in outputs)
            if (!compiled.Graph.Outputs.Any(v => v.Name == o))
                throw new BadInputException($"the compiled model has no output '{o}' (the original has)");
        // Caches stored as integers (quantize_kv storage: native): fed and compared as the float values they hold.
        var stored = KvStorage.Of(compiled.Metadata);
        var originalStored = KvStorage.Of(original.Metadata);
        bool Plain(Value v) => !stored.Contains(v.Name) && !originalStored.Contains(v.Name);
        SameShapes("input", original.Graph.Inputs.Where(v => !v.IsInitializer && Plain(v)), compiled.Graph);
        SameShapes("output", original.Graph.Outputs.Where(Plain), compiled.Graph);

        // PrefixQuant's prefix kept in the compiled model's KV cache: the original reads the prefix and then each sample.
        var prefix = PrefixAlignment.Of(original, compiled);
        var prefixed = prefix?.OriginalSamples(original.Graph, tokens, samples.Count);
        // Caches held in another basis (rotated, scaled): the compiled model's, and the original's when it is itself a compiled model.
        var caches = CacheTransforms.Of(compiled.Metadata);
        var originalCaches = CacheTransforms.Of(original.Metadata);
        var pairs = options.PerLayer ? MapIntermediates(original, compiled, prefix is not null) : [];
        var outErr = outputs.ToDictionary(o => o, _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var layerErr = pairs.ToDictionary(p => p.Compiled, _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var logits = new LogitsAccumulator();
        var skipped = new HashSet<string>(StringComparer.Ordinal);   // intermediates that turned out not to be float tensors
        bool hasLogits = outputs.Contains(options.LogitsOutput);
        using var exact = options.ExactReference is { } x64 ? OrtModel.CreateSession(x64) : null;
        var vsExact = outputs.ToDictionary(o => o, _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var noise = outputs.ToDictionary(o => o, _ => new ErrorAccumulator(), StringComparer.Ordinal);

        // A model past options.SegmentBytes of weights runs one segment at a time (SegmentedRun): ONNX Runtime never holds it whole.
        var segmentsOriginal = SegmentedRun.Plan(original, options.SegmentBytes);
        var segmentsCompiled = SegmentedRun.Plan(compiled, options.SegmentBytes);
        bool greedy = hasLogits && options.GreedySteps > 0 && tokens is { Count: > 0 } && tokens[0].Length > 0;

        // First pass: outputs (and as many intermediates as fit the budget), then further groups.
        var groups = GroupPairs(pairs, options.GroupBytes);
        if (groups.Count == 0) groups.Add([]);
        int total = groups.Count * samples.Count, done = 0;
        for (int gi = 0; gi < groups.Count; gi++)
        {
            var group = groups[gi];
            var origNames = (gi == 0 ? outputs : []).Concat(group.Select(p => p.Original)).ToList();
            var compNames = (gi == 0 ? outputs : []).Concat(group.Select(p => p.Compiled)).ToList();
            if (origNames.Count == 0) continue;
            var compSamples = caches.IsEmpty && stored.IsEmpty ? samples : samples.Select(x => InCacheBasis(x, caches, stored)).ToList();
            var origBase = prefixed ?? samples;
            var origSamples = originalCaches.IsEmpty && originalStored.IsEmpty ? origBase
                : origBase.Select(x => InCacheBasis(x, originalCaches, originalStored)).ToList();
            using var ra = VerifyRuns.Of(original, segmentsOriginal, origSamples, origNames, "original");
            using var rb = VerifyRuns.Of(compiled, segmentsCompiled, compSamples, compNames, "compiled");
            for (int s = 0; s < samples.Count; s++)
            {
                var ro = ra.Sample(s);
                var rc = rb.Sample(s);
                using var rx = exact is not null && gi == 0 ? RunOne(exact, origBase[s], outputs, "float64 original") : null;
                for (int k = 0; k < origNames.Count; k++)
                {
                    bool isOutputTensor = gi == 0 && k < outputs.Count;
                    var a = isOutputTensor ? ro[k].Output : ro[k].Intermediate;
                    var b = isOutputTensor ? rc[k].Output : rc[k].Intermediate;
                    if (isOutputTensor && b is not null && caches.Contains(compNames[k]))
                        caches.ToOriginal(compNames[k], b, rc[k].Shape);
                    if (isOutputTensor && a is not null && originalCaches.Contains(origNames[k]))
                        originalCaches.ToOriginal(origNames[k], a, ro[k].Shape);
                    if (a is null || b is null) { skipped.Add(compNames[k]); continue; }
                    var shapeA = ro[k].Shape;
                    if (prefix is not null)
                    {
                        // From the first text position on (see PrefixAlignment); an intermediate of another shape is left out.
                        var at = prefix.Align(a, shapeA, rc[k].Shape, out shapeA);
                        if (at is null && !isOutputTensor) { skipped.Add(compNames[k]); continue; }
                        a = at ?? a;
                    }
                    if (a.Length != b.Length)
                        throw new BadInputException($"tensor '{compNames[k]}' has {b.Length} elements in the compiled model but its " +
                            $"original '{origNames[k]}' has {a.Length}");
                    if (isOutputTensor && shapeA is var os && rc[k].Shape is var cs && !os.SequenceEqual(cs))
                        throw new BadInputException($"output '{origNames[k]}' is {ShapeText(os)} in the original but {ShapeText(cs)} in " +
                            $"the compiled model");
                    bool isOutput = gi == 0 && k < outputs.Count;
                    if (isOutput)
                    {
                        outErr[origNames[k]].Add(a, b);
                        if (rx is not null && AsFloat(rx[k], true) is { } ex
                            && (prefix is null ? ex : prefix.Align(ex, rx[k].GetTensorTypeAndShape().Shape, rc[k].Shape, out _)) is { } e
                            && e.Length == a.Length)
                        {
                            vsExact[origNames[k]].Add(e, b);
                            noise[origNames[k]].Add(e, a);
                        }
                        if (origNames[k] == options.LogitsOutput)
                        {
                            int vocab = (int)ro[k].Shape[^1];
                            logits.Add(a, b, vocab, tokens is null ? default : tokens[s]);
                        }
                    }
                    else layerErr[compNames[k]].Add(a, b);
                }
                progress?.Report((++done, total));
            }
        }

        var order = compiled.Graph.TopologicalOrder().Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        var layers = pairs.Where(p => !skipped.Contains(p.Compiled)).Select(p =>
        {
            var v = compiled.Graph.Find(p.Compiled)!;
            var e = layerErr[p.Compiled];
            int ord = v.Producer is { } prod && order.TryGetValue(prod, out int o) ? o : -1;
            return new LayerError(ord, p.Compiled, p.Original, v.Producer?.OpType ?? "input", e.SqnrDb, e.Cosine, e.MaxAbsError,
                e.ReferenceMin, e.ReferenceMax);
        }).OrderBy(l => l.Order).ThenBy(l => l.CompiledName, StringComparer.Ordinal).ToList();

        return new VerifyReport(samples.Count,
            outputs.Select(o => new OutputError(o, outErr[o].SqnrDb, outErr[o].Cosine, outErr[o].MaxAbsError, outErr[o].Count)
            {
                SqnrVsExactDb = exact is null ? null : vsExact[o].SqnrDb,
                OriginalNoiseSqnrDb = exact is null ? null : noise[o].SqnrDb,
                NonFinite = outErr[o].TestNonFinite,
            }).ToList(),
            hasLogits ? new LogitsMetrics(logits.Top1Agreement, logits.ReferencePerplexity, logits.TestPerplexity, logits.ScoredTokens)
                : null,
            layers)
        {
            Greedy = greedy
                ? GreedyDecoding.Compare(original, compiled, tokens![0][0], GreedySteps(original, compiled, options), options.LogitsOutput,
                    options.DecodeBudget, prefix?.Tokens) : null,
        };
    }

    /// <summary>The greedy tokens to compare: fewer when either model decodes in segments.</summary>
    private static int GreedySteps(Model original, Model compiled, VerifyOptions options) =>
        SegmentedRun.Plan(original, options.DecodeBudget) is null && SegmentedRun.Plan(compiled, options.DecodeBudget) is null
            ? options.GreedySteps : Math.Min(options.GreedySteps, options.SegmentedGreedySteps);

    /// <summary>Refuses a compiled model whose input or output of the same name has another rank or another fixed dimension than the
    /// original's.</summary>
    private static void SameShapes(string kind, IEnumerable<Value> originals, Graph compiled)
    {
        foreach (var o in originals)
        {
            var c = (kind == "input" ? compiled.Inputs : compiled.Outputs).FirstOrDefault(v => v.Name == o.Name);
            if (c?.Shape is not { } cs || o.Shape is not { } os) continue;
            if (cs.Length != os.Length || cs.Zip(os).Any(d => d.First is { } x && d.Second is { } y && x != y))
                throw new BadInputException($"{kind} '{o.Name}' is {ShapeText(os)} in the original but {ShapeText(cs)} in the compiled " +
                    $"model");
        }
    }

    private static string ShapeText(IEnumerable<long?> shape) => "["
        + string.Join(", ", shape.Select(d => d?.ToString(CultureInfo.InvariantCulture) ?? "?")) + "]";

    private static string ShapeText(IEnumerable<long> shape) => ShapeText(shape.Select(d => (long?)d));

    /// <summary>
    /// The sample with every past-cache input a pass keeps in another basis (QuaRot's caches and FireQ's scaled key and value
    /// caches, from the model's metadata) moved into that basis, as the compiled model's own present outputs are, and every one it
    /// stores as integers in that stored form.
    /// </summary>
    private static CalibrationSample InCacheBasis(CalibrationSample sample, CacheTransforms caches, KvStorage stored)
    {
        var s = new CalibrationSample();
        foreach (var (name, (given, shape)) in sample.Inputs)
        {
            var data = given;
            if (data is float[] f && f.Length > 0 && caches.Contains(name))
            {
                var r = (float[])f.Clone();
                caches.ToRotated(name, r, shape);
                data = r;
            }
            // A cache stored as integers takes the stored form of those values (an empty past: an empty int8 / uint8 tensor).
            s.Inputs[name] = data is float[] x && stored.Contains(name) ? stored.Quantize(name, x, shape) : (data, shape);
        }
        return s;
    }

    private sealed record Pair(string Compiled, string Original, long Bytes);

    /// <summary>Float node outputs of the compiled model whose origin (provenance, else same name) is a float node output of the
    /// original. <paramref name="prefixAligned"/>: the original reads PrefixQuant's prefix first (<see cref="PrefixAlignment"/>), so
    /// a tensor that prefix_tokens alone marked transformed (<c>#prefix</c>) compares with its original again.</summary>
    private static List<Pair> MapIntermediates(Model original, Model compiled, bool prefixAligned)
    {
        var prov = Provenance.Of(compiled);
        var outputs = compiled.Graph.Outputs.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var pairs = new List<Pair>();
        var taken = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in compiled.Graph.TopologicalOrder())
            foreach (var v in n.Outputs)
            {
                if (v is null || outputs.Contains(v.Name)) continue;
                string origin = prov.OriginOf(v.Name);
                if (prefixAligned && origin.EndsWith("#prefix", StringComparison.Ordinal) && origin.IndexOf('#', StringComparison.Ordinal)
                    == origin.Length - "#prefix".Length)
                    origin = origin[..^"#prefix".Length];
                var ov = original.Graph.Find(origin);
                if (ov?.Producer is null || !IsFloat(ov) || !IsFloat(v)) continue;
                if (!ReferenceEquals(ov.Graph, original.Graph)) continue;
                // Several compiled tensors may stand for one original (e.g. before and after a QDQ pair): keep the last one.
                if (!taken.Add(origin)) pairs.RemoveAll(p => p.Original == origin);
                long elems = ov.Shape?.Aggregate(1L, (a, d) => a * (d ?? 512)) ?? 1L << 20;
                pairs.Add(new Pair(v.Name, origin, 4 * elems));
            }
        return pairs;
    }

    private static bool IsFloat(Value v) => v.ElementType is 1 or 10 or 16 or 0;

    private static List<List<Pair>> GroupPairs(List<Pair> pairs, long budget)
    {
        var groups = new List<List<Pair>>();
        var cur = new List<Pair>();
        long bytes = 0;
        foreach (var p in pairs)
        {
            if (cur.Count > 0 && bytes + p.Bytes > budget) { groups.Add(cur); cur = []; bytes = 0; }
            cur.Add(p);
            bytes += p.Bytes;
        }
        if (cur.Count > 0) groups.Add(cur);
        return groups;
    }

    internal static IDisposableReadOnlyCollection<OrtValue> RunOne(InferenceSession session, CalibrationSample sample, List<string> outputs,
        string which)
    {
        var inputs = CalibrationInputs.ToOrt(sample);
        try
        {
            var names = session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
            var used = inputs.Where(x => names.Contains(x.Name)).ToList();
            return OrtModel.Run(session, used, outputs, which + " model");
        }
        finally
        {
            foreach (var (_, v) in inputs) v.Dispose();
        }
    }

    /// <summary>The tensor as float32; null for a non-numeric intermediate (bool masks...), which is left out of the comparison.</summary>
    internal static float[]? AsFloat(OrtValue v, bool isOutput)
    {
        var info = v.GetTensorTypeAndShape();
        if (!isOutput && info.ElementDataType is not (OrtType.Float or OrtType.Float16 or OrtType.BFloat16)) return null;
        switch (info.ElementDataType)
        {
            case OrtType.Float: return v.GetTensorDataAsSpan<float>().ToArray();
            case OrtType.Float16: { var h = v.GetTensorDataAsSpan<Float16>(); var f = new float[h.Length];
                for (int i = 0; i < h.Length; i++) f[i] = (float)h[i]; return f; }
            case OrtType.BFloat16: { var h = v.GetTensorDataAsSpan<BFloat16>(); var f = new float[h.Length];
                for (int i = 0; i < h.Length; i++) f[i] = (float)h[i]; return f; }
            case OrtType.Int64: { var h = v.GetTensorDataAsSpan<long>(); var f = new float[h.Length];
                for (int i = 0; i < h.Length; i++) f[i] = h[i]; return f; }
            case OrtType.Int32: { var h = v.GetTensorDataAsSpan<int>(); var f = new float[h.Length];
                for (int i = 0; i < h.Length; i++) f[i] = h[i]; return f; }
            case OrtType.Bool: { var h = v.GetTensorDataAsSpan<bool>(); var f = new float[h.Length];
                for (int i = 0; i < h.Length; i++) f[i] = h[i] ? 1 : 0; return f; }
            default: throw new BadInputException($"cannot compare an output of type {info.ElementDataType}");
        }
    }
}
