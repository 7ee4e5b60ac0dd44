using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using OrtType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace Quantc.Core.Verification;

/// <summary>Greedy decoding of both models from <paramref name="Start"/>: how many of <paramref name="Steps"/> generated tokens match
/// before the first divergence.</summary>
public sealed record GreedyMatch(long Start, int Steps, int Matching);

/// <summary>
/// Greedy decoding through a decoder model's KV cache (inputs past_key_values.*, outputs present.*): one token per step,
/// the cache the model returned fed back as it is (so a compiled model's rotated or quantized cache stays in its own form).
/// </summary>
public static class GreedyDecoding
{
    private const string Past = "past_key_values.", Present = "present.";

    /// <summary>
    /// The tokens greedy decoding generates from <paramref name="start"/> (<paramref name="steps"/> of them, after the
    /// start), or null when the model has no input_ids, no KV cache or no <paramref name="logits"/> output.
    /// </summary>
    public static IReadOnlyList<long>? Decode(Model model, long start, int steps, string logits = "logits") =>
        Decode(model, [start], steps, logits);

    /// <summary>The tokens greedy decoding generates after <paramref name="prompt"/> (the whole prompt in the first step, then one
    /// token per step), or null when the model cannot be decoded this way.</summary>
    public static IReadOnlyList<long>? Decode(Model model, IReadOnlyList<long> prompt, int steps, string logits = "logits") =>
        Decode(model, prompt, steps, logits, segmentBytes: null);

    /// <summary>As <see cref="Decode(Model, IReadOnlyList{long}, int, string)"/>; a model with more than <paramref name="segmentBytes"/> of
    /// weights is run one segment at a time for every token (<see cref="SegmentedRun"/>), so ONNX Runtime never holds it whole.</summary>
    public static IReadOnlyList<long>? Decode(Model model, IReadOnlyList<long> prompt, int steps, string logits, long? segmentBytes)
    {
        var g = model.Graph;
        var inputs = g.Inputs.Where(v => !v.IsInitializer).Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var pasts = inputs.Where(n => n.StartsWith(Past, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        var presents = pasts.Select(p => Present + p[Past.Length..]).ToList();
        if (!inputs.Contains("input_ids") || pasts.Count == 0 || !g.Outputs.Any(o => o.Name == logits)
            || presents.Any(p => !g.Outputs.Any(o => o.Name == p)))
            return null;
        if (segmentBytes is { } budget && SegmentedRun.Plan(model, budget) is { } segments)
            return DecodeInSegments(model, segments, prompt, steps, logits, pasts, presents);
        var outputs = new List<string> { logits };
        outputs.AddRange(presents);
        using var session = OrtModel.CreateSession(model);
        var tokens = new List<long>(prompt);
        IDisposableReadOnlyCollection<OrtValue>? previous = null;
        try
        {
            for (int t = 0; t < steps; t++)
            {
                // Step 0: the prompt with an empty cache; then the last token at its position with the returned cache.
                var sample = t == 0 ? CalibrationInputs.FromTokens(g, prompt.ToArray()) : Step(tokens[^1], prompt.Count + t - 1);
                var own = CalibrationInputs.ToOrt(sample);
                try
                {
                    var names = new List<string>();
                    var values = new List<OrtValue>();
                    foreach (var (name, value) in own)
                        if (inputs.Contains(name) && (t == 0 || !name.StartsWith(Past, StringComparison.Ordinal)))
                            { names.Add(name); values.Add(value); }
                    if (t > 0)
                        for (int i = 0; i < pasts.Count; i++) { names.Add(pasts[i]); values.Add(previous![i + 1]); }
                    using var ro = new RunOptions();
                    var result = session.Run(ro, names, values, outputs);
                    previous?.Dispose();
                    previous = result;
                }
                finally
                {
                    foreach (var (_, v) in own) v.Dispose();
                }
                tokens.Add(ArgMaxLastRow(previous![0]));
            }
        }
        finally
        {
            previous?.Dispose();
        }
        return tokens.Skip(prompt.Count).ToList();
    }

    /// <summary>
    /// Greedy decoding of a model too large for one session: for every token, each segment gets its own session in turn (the
    /// prompt in the first step, then one token with the caches the segments returned), as the segmented verification runs
    /// the samples. The same nodes run on the same inputs, so the tokens are those of a whole-model decode.
    /// </summary>
    private static List<long> DecodeInSegments(Model model, IReadOnlyList<SegmentedRun.Segment> segments, IReadOnlyList<long> prompt,
        int steps, string logits, IReadOnlyList<string> pasts, IReadOnlyList<string> presents)
    {
        var g = model.Graph;
        var wanted = new List<string> { logits };
        wanted.AddRange(presents);
        var tokens = new List<long>(prompt);
        var cache = new Dictionary<string, (Array Data, long[] Shape)>(StringComparer.Ordinal);
        for (int t = 0; t < steps; t++)
        {
            var sample = t == 0 ? CalibrationInputs.FromTokens(g, prompt.ToArray()) : Step(tokens[^1], prompt.Count + t - 1);
            if (t > 0)
                for (int i = 0; i < pasts.Count; i++) sample.Inputs[pasts[i]] = cache[presents[i]];
            long next = -1;
            var returned = new Dictionary<string, (Array, long[])>(StringComparer.Ordinal);
            SegmentedRun.Run(model, segments, wanted, [sample], (name, value, _) =>
            {
                if (name == logits) next = ArgMaxLastRow(value);
                else
                {
                    var copy = CalibrationInputs.Copy(value);
                    lock (returned) returned[name] = copy;
                }
            });
            if (next < 0 || returned.Count != presents.Count)
                throw new InvalidOperationException("a segmented decoding step did not return the logits and every cache");
            cache = returned;
            tokens.Add(next);
        }
        return tokens.Skip(prompt.Count).ToList();
    }

    /// <summary>Both models decoded greedily from <paramref name="start"/>; null when either cannot be decoded this way. Models with more
    /// than <paramref name="segmentBytes"/> of weights decode in segments. <paramref name="originalPrefix"/>: the prefix tokens the
    /// compiled model keeps in its KV cache (prefix_tokens), which the original reads before the start.</summary>
    public static GreedyMatch? Compare(Model original, Model compiled, long start, int steps, string logits = "logits",
        long? segmentBytes = null, IReadOnlyList<long>? originalPrefix = null)
    {
        var a = Decode(original, [.. originalPrefix ?? [], start], steps, logits, segmentBytes);
        var b = a is null ? null : Decode(compiled, [start], steps, logits, segmentBytes);
        if (a is null || b is null) return null;
        int matching = 0;
        while (matching < steps && a[matching] == b[matching]) matching++;
        return new GreedyMatch(start, steps, matching);
    }

    private static CalibrationSample Step(long token, int position)
    {
        var s = new CalibrationSample();
        s.Inputs["input_ids"] = (new[] { token }, [1, 1]);
        s.Inputs["attention_mask"] = (Enumerable.Repeat(1L, position + 1).ToArray(), [1, position + 1]);
        s.Inputs["position_ids"] = (new[] { (long)position }, [1, 1]);
        return s;
    }

    private static long ArgMaxLastRow(OrtValue logits)
    {
        var info = logits.GetTensorTypeAndShape();
        int vocab = (int)info.Shape[^1];
        float[] row = info.ElementDataType switch
        {
            OrtType.Float => logits.GetTensorDataAsSpan<float>()[^vocab..].ToArray(),
            OrtType.Float16 => logits.GetTensorDataAsSpan<Float16>()[^vocab..].ToArray().Select(h => (float)h).ToArray(),
            _ => throw new Quantc.Onnx.BadInputException($"logits of type {info.ElementDataType}: greedy decoding reads float32 or " +
                $"float16"),
        };
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }
}
