using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>Runs and comparisons the function-preservation tests share.</summary>
internal static class OrtRuns
{
    /// <summary>
    /// The tiny (or <paramref name="size"/>) reference LLaMA saved under <paramref name="dir"/> and loaded; without
    /// <paramref name="massive"/> the same network without its massive activations: the trigger flag cleared from the
    /// embedding (models/README.md), so no MLP neuron fires ~1500 and no residual channel reaches ~450.
    /// </summary>
    public static Model LoadLlama(DirectoryInfo dir, string flavor, string size = "tiny", bool massive = true)
    {
        var path = Path.Combine(dir.FullName, $"llama-{flavor}-{Guid.NewGuid():N}.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave("llama", size, 0, flavor, path);
        var m = Model.Load(path);
        if (massive) return m;
        TriggerFlag.Remove(m, readers: false);
        using (m) return Model.Load(Save(dir, m));
    }

    /// <summary>Saves <paramref name="m"/> under <paramref name="dir"/>; returns the path.</summary>
    public static string Save(DirectoryInfo dir, Model m)
    {
        var path = Path.Combine(dir.FullName, $"m-{Guid.NewGuid():N}.onnx");
        m.Save(path);
        return path;
    }

    /// <summary><paramref name="n"/> calibration samples of 64 tokens (calib.txt).</summary>
    public static IReadOnlyList<CalibrationSample> Calibration(Model m, int n) =>
        DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = n }).Samples;

    /// <summary>Runs the recipe <paramref name="yaml"/> on <paramref name="m"/> with the built-in passes (and calibration data, when given).</summary>
    public static PassContext RunRecipe(Model m, string yaml, IReadOnlyList<CalibrationSample>? calibration = null)
    {
        return TestCompiler.Compile(m, yaml, calibration).Context;
    }

    /// <summary><paramref name="n"/> held-out token sequences of <paramref name="length"/> (eval.txt).</summary>
    public static IReadOnlyList<long[]> EvalTokens(Model m, int n, int length) =>
        DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "eval.txt"), new DataOptions { SplitDocuments = false, SequenceLength = length, MaxSamples = n }).Tokens!;

    /// <summary>The decode step after <paramref name="prefix"/> tokens: token <paramref name="next"/> at position prefix, the given past [1, 2, prefix, 32].</summary>
    public static CalibrationSample DecodeStep(long next, int prefix, IEnumerable<KeyValuePair<string, float[]>> present)
    {
        var s = new CalibrationSample();
        s.Inputs["input_ids"] = (new[] { next }, [1, 1]);
        s.Inputs["attention_mask"] = (Enumerable.Repeat(1L, prefix + 1).ToArray(), [1, prefix + 1]);
        s.Inputs["position_ids"] = (new[] { (long)prefix }, [1, 1]);
        foreach (var (name, data) in present.Where(kv => kv.Key.StartsWith("present.", StringComparison.Ordinal)))
            s.Inputs["past_key_values." + name["present.".Length..]] = (data, [1, 2, prefix, 32]);
        return s;
    }

    /// <summary>Every float output of one ORT run.</summary>
    public static Dictionary<string, float[]> Outputs(InferenceSession s, CalibrationSample sample)
    {
        var inputs = CalibrationInputs.ToOrt(sample);
        try
        {
            using var ro = new RunOptions();
            var names = s.OutputNames.ToList();
            using var outs = s.Run(ro, inputs.Select(i => i.Name).ToList(), inputs.Select(i => i.Value).ToList(), names);
            var d = new Dictionary<string, float[]>(StringComparer.Ordinal);
            for (int i = 0; i < names.Count; i++) d[names[i]] = outs[i].GetTensorDataAsSpan<float>().ToArray();
            return d;
        }
        finally { foreach (var (_, v) in inputs) v.Dispose(); }
    }

    /// <summary>max |a − b| / max |a|.</summary>
    public static double MaxRelErr(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double err = 0, max = 1e-30;
        for (int i = 0; i < a.Length; i++) { err = Math.Max(err, Math.Abs((double)a[i] - b[i])); max = Math.Max(max, Math.Abs((double)a[i])); }
        return err / max;
    }

    /// <summary>Worst max relative error per output kind (logits, keys, values), the compiled cache outputs moved back to the original basis.</summary>
    public static Dictionary<string, double> Compare(Dictionary<string, float[]> original, Dictionary<string, float[]> compiled, CacheTransforms rot, Dictionary<string, double>? worst = null)
    {
        worst ??= new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, va) in original)
        {
            var vb = (float[])compiled[name].Clone();
            if (rot.Contains(name)) rot.ToOriginal(name, vb);
            string kind = name == "logits" ? "logits" : name.EndsWith(".key", StringComparison.Ordinal) ? "keys" : "values";
            worst[kind] = Math.Max(worst.GetValueOrDefault(kind), MaxRelErr(va, vb));
        }
        return worst;
    }
}
