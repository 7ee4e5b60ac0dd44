using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Quantc.Ir;
using Quantc.Ir.Import;
using Xunit.Abstractions;

namespace Quantc.Onnx.Tests;

/// <summary>
/// The opset converter over ONNX's backend-test corpus: every model that ONNX Runtime runs on its first bundled data set,
/// converted to opset 21 (what lower_qdq needs), loads in ONNX Runtime and gives the same outputs as the original
/// (rtol 1e-4, atol 1e-6), or is refused with a one-line reason before anything was changed. The counts are printed.
/// </summary>
public sealed class OpsetConversionCorpusTests(ITestOutputHelper log)
{
    public const long Target = 21;

    /// <summary>The outcome of one corpus model (also used by bench/opset-corpus).</summary>
    public enum Outcome { Converted, AlreadyNew, Refused, Skipped, Failed }

    [Fact]
    public void EveryCorpusModelConvertsToOpset21OrIsRefused()
    {
        var names = ConformanceCorpusTests.ModelNames();
        Assert.True(names.Count >= 1000, $"the corpus is missing under {ConformanceCorpusTests.Corpus}");
        var tally = new Dictionary<Outcome, int>();
        var failures = new List<string>();
        var refusals = new List<string>();
        string dir = Directory.CreateTempSubdirectory("quantc-opset").FullName;
        try
        {
            foreach (var name in names)
            {
                var (outcome, detail) = Check(Path.Combine(ConformanceCorpusTests.Corpus, name, "model.onnx"), dir, Target);
                tally[outcome] = tally.GetValueOrDefault(outcome) + 1;
                if (outcome == Outcome.Failed) failures.Add($"{name}: {detail}");
                if (outcome == Outcome.Refused) refusals.Add($"{name}: {detail}");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        log.WriteLine(string.Join(", ", tally.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}: {kv.Value}")));
        foreach (var r in refusals) log.WriteLine("refused " + r);
        Assert.True(failures.Count == 0, $"{failures.Count} failed:\n" + string.Join("\n", failures.Take(20)));
        Assert.True(tally.GetValueOrDefault(Outcome.Converted) >= 300, "too few models were converted: " + tally.GetValueOrDefault(Outcome.Converted));
    }

    /// <summary>Converts one model to <paramref name="target"/> and compares ONNX Runtime's outputs on its first data set.</summary>
    public static (Outcome, string) Check(string path, string tempDir, long target)
    {
        string set = Path.Combine(Path.GetDirectoryName(path)!, "test_data_set_0");
        if (!Directory.Exists(set)) return (Outcome.Skipped, "no data set");
        using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        InferenceSession original;
        try { original = new InferenceSession(path, so); }
        catch (OnnxRuntimeException) { return (Outcome.Skipped, "ONNX Runtime does not load the original"); }
        using var originalSession = original;
        var inputs = Directory.GetFiles(set, "input_*.pb").Order(StringComparer.Ordinal).Select(ConformanceCorpusTests.TryTensor).ToList();
        if (inputs.Any(t => t is null) || inputs.Count != originalSession.InputNames.Count)
            return (Outcome.Skipped, "inputs that are not plain tensors");
        var values = inputs.Select(t => OrtTensors.ToOrt(t!)).ToList();
        string saved = Path.Combine(tempDir, Guid.NewGuid().ToString("N") + ".onnx");
        try
        {
            if (values.Any(v => v is null)) return (Outcome.Skipped, "an input type the C# API cannot hold");
            using var ro = new RunOptions();
            var outNames = originalSession.OutputNames.ToList();
            IDisposableReadOnlyCollection<OrtValue> want;
            try { want = originalSession.Run(ro, originalSession.InputNames, values!, outNames); }
            catch (OnnxRuntimeException) { return (Outcome.Skipped, "ONNX Runtime cannot run the original"); }
            using var wantValues = want;
            using (var m = Model.Load(path))
            {
                OpsetConversion? c;
                try { c = OpsetConverter.Require(m, target); }
                catch (BadInputException e) { return (Outcome.Refused, e.Message); }
                if (c is null) return (Outcome.AlreadyNew, "");
                m.Save(saved);
            }
            InferenceSession converted;
            try { converted = new InferenceSession(saved, so); }
            catch (OnnxRuntimeException e) { return (Outcome.Failed, "does not load: " + FirstLine(e.Message)); }
            using var session = converted;
            IDisposableReadOnlyCollection<OrtValue> got;
            try { got = session.Run(ro, originalSession.InputNames, values!, outNames); }
            catch (OnnxRuntimeException e) { return (Outcome.Failed, "does not run: " + FirstLine(e.Message)); }
            using var gotValues = got;
            for (int i = 0; i < outNames.Count; i++)
            {
                if (want[i].OnnxType != OnnxValueType.ONNX_TYPE_TENSOR) continue;
                if (want[i].GetTensorTypeAndShape().ElementDataType == TensorElementType.String) continue;
                if (!want[i].GetTensorTypeAndShape().Shape.SequenceEqual(got[i].GetTensorTypeAndShape().Shape))
                    return (Outcome.Failed, $"output {outNames[i]}: shape changed");
                var a = OrtTensors.AsDoubles(want[i], out _);
                var b = OrtTensors.AsDoubles(got[i], out _);
                for (int k = 0; k < a.Length; k++)
                    if (!(a[k] == b[k] || (double.IsNaN(a[k]) && double.IsNaN(b[k])) || Math.Abs(a[k] - b[k]) <= 1e-6 + 1e-4 * Math.Abs(a[k])))
                        return (Outcome.Failed, $"output {outNames[i]}[{k}]: {a[k]} before, {b[k]} after");
            }
            return (Outcome.Converted, "");
        }
        finally
        {
            foreach (var v in values) v?.Dispose();
            File.Delete(saved);
        }
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
