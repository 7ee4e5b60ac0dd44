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
    public static IReadOnlyList<long>? Decode(Model model, IReadOnlyList<long> prompt, int steps, string logits = "logits")
    {
        var g = model.Graph;
        var inputs = g.Inputs.Where(v => !v.IsInitializer).Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var pasts = inputs.Where(n => n.StartsWith(Past, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        var presents = pasts.Select(p => Present + p[Past.Length..]).ToList();
        if (!inputs.Contains("input_ids") || pasts.Count == 0 || !g.Outputs.Any(o => o.Name == logits)
            || presents.Any(p => !g.Outputs.Any(o => o.Name == p)))
            return null;
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

    /// <summary>Both models decoded greedily from <paramref name="start"/>; null when either cannot be decoded this way.</summary>
    public static GreedyMatch? Compare(Model original, Model compiled, long start, int steps, string logits = "logits")
    {
        var a = Decode(original, start, steps, logits);
        var b = a is null ? null : Decode(compiled, start, steps, logits);
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
