using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Microsoft.ML.OnnxRuntime;
using OrtType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace Quantc.Core.Verification;

/// <summary>One tensor of one run on the host, as float32 (null for a type verify cannot compare), and its shape.</summary>
internal sealed record HostTensor(float[]? Data, OrtType Type, long[] Shape)
{
    /// <summary>As an output: any numeric type compares; another is bad input.</summary>
    public float[] Output => Data ?? throw new Quantc.Onnx.BadInputException($"cannot compare an output of type {Type}");

    /// <summary>As an intermediate: float types only; null for the others (bool masks...), which are left out of the comparison.</summary>
    public float[]? Intermediate => Type is OrtType.Float or OrtType.Float16 or OrtType.BFloat16 ? Data : null;
}

/// <summary>
/// The tensors verify compares, per sample, from one model: a whole-model session run sample by sample as they are asked for, or,
/// for a model run in segments (<see cref="SegmentedRun"/>), every sample's tensors collected first (the segments take all
/// samples in turn).
/// </summary>
internal sealed class VerifyRuns : IDisposable
{
    private readonly InferenceSession? _session;
    private readonly Func<int, HostTensor[]> _sample;

    private VerifyRuns(InferenceSession? session, Func<int, HostTensor[]> sample)
    {
        _session = session;
        _sample = sample;
    }

    /// <summary>The tensors asked for (in the order asked) of sample <paramref name="s"/>.</summary>
    public HostTensor[] Sample(int s) => _sample(s);

    public void Dispose() => _session?.Dispose();

    /// <summary>Runs of <paramref name="model"/> (the <paramref name="which"/> one) for <paramref name="names"/>.</summary>
    public static VerifyRuns Of(Model model, IReadOnlyList<SegmentedRun.Segment>? segments, IReadOnlyList<CalibrationSample> samples,
        List<string> names, string which)
    {
        // A cache stored as integers (quantize_kv storage: native) is compared as the float values it holds.
        var stored = KvStorage.Of(model.Metadata);
        HostTensor Host(string name, OrtValue v) => stored.Contains(name) ? Stored(stored, name, v) : VerifyRuns.Host(v);
        if (segments is null)
        {
            var session = OrtModel.CreateSession(model, names);
            return new VerifyRuns(session, s =>
            {
                using var r = Verifier.RunOne(session, samples[s], names, which);
                return r.Select((v, i) => Host(names[i], v)).ToArray();
            });
        }
        var all = new HostTensor[samples.Count][];
        for (int s = 0; s < samples.Count; s++) all[s] = new HostTensor[names.Count];
        var slot = names.Select((n, i) => (n, i)).GroupBy(x => x.n, StringComparer.Ordinal)
            .ToDictionary(x => x.Key, x => x.Select(y => y.i).ToList(), StringComparer.Ordinal);
        SegmentedRun.Run(model, segments, names, samples, (name, value, sample) =>
        {
            var host = Host(name, value);
            foreach (int i in slot[name]) all[sample][i] = host;
        });
        return new VerifyRuns(null, s => all[s]);
    }

    private static HostTensor Stored(KvStorage stored, string name, OrtValue v)
    {
        var (data, shape) = CalibrationInputs.Copy(v);
        return new HostTensor(stored.Dequantize(name, data, shape), OrtType.Float, stored.LogicalShape(name, shape));
    }

    private static HostTensor Host(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        bool comparable = info.ElementDataType is OrtType.Float or OrtType.Float16 or OrtType.BFloat16 or OrtType.Int64 or OrtType.Int32
            or OrtType.Bool;
        return new HostTensor(comparable ? Verifier.AsFloat(v, true) : null, info.ElementDataType, info.Shape);
    }
}
