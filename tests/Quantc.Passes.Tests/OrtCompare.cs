using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;

namespace Quantc.Passes.Tests;

/// <summary>Runs models in ONNX Runtime and compares their float outputs (function-preservation tests).</summary>
internal static class OrtCompare
{
    /// <summary>Every float output of one ORT run, by name.</summary>
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
}
