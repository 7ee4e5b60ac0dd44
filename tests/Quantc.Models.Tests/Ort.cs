using Microsoft.ML.OnnxRuntime;
using Google.Protobuf;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Models.Tests;

/// <summary>A float tensor read back from ONNX Runtime.</summary>
public sealed record Arr(float[] Data, long[] Shape)
{
    public long Dim(int i) => Shape[i < 0 ? Shape.Length + i : i];
}

/// <summary>Runs a decoder reference model in ONNX Runtime (batch 1) with the optimum KV-cache convention.</summary>
public sealed class Decoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly Model _model;

    public Decoder(Model model, IEnumerable<string>? extraOutputs = null)
    {
        _model = model;
        var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 2, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        _session = CreateSession(model, extraOutputs, so);
        so.Dispose();
        Layers = model.Graph.Inputs.Count(v => v.Name.StartsWith("past_key_values.", StringComparison.Ordinal) && v.Name.EndsWith(".key", StringComparison.Ordinal));
        var k0 = model.Graph.Inputs.FirstOrDefault(v => v.Name == "past_key_values.0.key");
        KvHeads = (int)(k0?.Shape?[1] ?? 0);
        HeadDim = (int)(k0?.Shape?[3] ?? 0);
    }

    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }

    /// <summary>The names of every output of the session (graph outputs plus extra ones).</summary>
    public IReadOnlyList<string> OutputNames => _session.OutputNames;

    /// <summary>
    /// Runs <paramref name="ids"/> after a cache of <paramref name="past"/> (null: empty); the attention mask covers past + ids,
    /// position ids continue from the past length. Returns every output by name.
    /// </summary>
    public Dictionary<string, Arr> Run(long[] ids, IReadOnlyDictionary<string, Arr>? past = null, long[]? attentionMask = null, IEnumerable<string>? only = null)
    {
        int pastLen = past is null || Layers == 0 ? 0 : (int)past["present.0.key"].Dim(2);
        int n = ids.Length;
        var inputs = new Dictionary<string, OrtValue>(StringComparer.Ordinal);
        try
        {
            foreach (var input in _model.Graph.Inputs)
            {
                string name = input.Name;
                OrtValue v;
                if (name == "input_ids") v = OrtValue.CreateTensorValueFromMemory(ids, [1, n]);
                else if (name == "attention_mask") v = OrtValue.CreateTensorValueFromMemory(attentionMask ?? Enumerable.Repeat(1L, pastLen + n).ToArray(), [1, pastLen + n]);
                else if (name == "position_ids") v = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(pastLen, n).Select(i => (long)i).ToArray(), [1, n]);
                else if (name.StartsWith("past_key_values.", StringComparison.Ordinal))
                {
                    string presentName = "present." + name["past_key_values.".Length..];
                    if (past is null) v = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, KvHeads, 0, HeadDim]);
                    else { var a = past[presentName]; v = OrtValue.CreateTensorValueFromMemory(a.Data, a.Shape); }
                }
                else if (name.StartsWith("past_", StringComparison.Ordinal) && name.Contains("_states.", StringComparison.Ordinal))
                {
                    string presentName = "present_" + name["past_".Length..];
                    var shape = input.Shape!.Select((dim, i) => i == 0 ? 1 : dim!.Value).ToArray();
                    if (past is null) v = OrtValue.CreateTensorValueFromMemory(new float[shape.Aggregate(1L, (a, b) => a * b)], shape);
                    else { var a = past[presentName]; v = OrtValue.CreateTensorValueFromMemory(a.Data, a.Shape); }
                }
                else throw new InvalidOperationException($"cannot fill input {name}");
                inputs[name] = v;
            }
            var names = (only ?? _session.OutputNames).ToList();
            // A RunOptions held in a local for the whole call: a temporary can be finalized by the GC while ONNX Runtime
            // still reads it, which crashed the test host twice (a segfault inside libonnxruntime.so under load).
            using var ro = new RunOptions();
            using var results = _session.Run(ro, inputs, names);
            var outs = new Dictionary<string, Arr>(StringComparer.Ordinal);
            for (int i = 0; i < names.Count; i++)
            {
                var r = results[i];
                var info = r.GetTensorTypeAndShape();
                float[] data = info.ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float ? r.GetTensorDataAsSpan<float>().ToArray() : [];
                outs[names[i]] = new Arr(data, info.Shape);
            }
            return outs;
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    public void Dispose() => _session.Dispose();

    /// <summary>
    /// A session over the IR model without writing it out: tensors that live in memory are inlined,
    /// tensors still in a loaded model's external data file are read by ORT from its folder.
    /// </summary>
    private static InferenceSession CreateSession(Model model, IEnumerable<string>? extraOutputs, SessionOptions so)
    {
        var (proto, payload) = model.ToProto();
        foreach (var (t, _) in ModelWalker.Tensors(proto))
        {
            if (t.DataLocation != TensorProto.Types.DataLocation.External || t.ExternalData.Count > 0) continue;
            var data = payload(t) ?? throw new InvalidOperationException($"tensor '{t.Name}' has no data");
            TensorBytes.SetRaw(t, data.Span);
        }
        var existing = proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in extraOutputs ?? [])
            if (existing.Add(name)) proto.Graph.Output.Add(new ValueInfoProto { Name = name });
        if (model.File is not null)
            so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", model.File.Directory);
        return new InferenceSession(proto.ToByteArray(), so);
    }
}
