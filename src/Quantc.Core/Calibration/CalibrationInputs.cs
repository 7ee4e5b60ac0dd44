using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Calibration;

/// <summary>One calibration sample: named input tensors (float32 or int64 here), with shapes.</summary>
public sealed class CalibrationSample
{
    public Dictionary<string, (Array Data, long[] Shape)> Inputs { get; } = new(StringComparer.Ordinal);
}

/// <summary>
/// Builds complete model inputs from token ids for decoder models in the Hugging Face / optimum
/// convention: input_ids, attention_mask (ones), position_ids (0..n-1), and empty past key/value
/// caches (past length 0) — so a calibration run is a plain prefill.
/// </summary>
public static class CalibrationInputs
{
    /// <summary>Whether an input takes the token ids themselves (input_ids, ids, tokens).</summary>
    public static bool IsTokenInput(string name) => name is "input_ids" or "ids" or "tokens";

    /// <summary>Inputs for one sequence of token ids (batch 1).</summary>
    public static CalibrationSample FromTokens(Graph graph, ReadOnlySpan<long> tokens)
    {
        var s = new CalibrationSample();
        int n = tokens.Length;
        foreach (var input in graph.Inputs)
        {
            if (input.IsInitializer) continue;
            string name = input.Name;
            var shape = input.Shape;
            if (IsTokenInput(name))
                s.Inputs[name] = (Cast(tokens.ToArray(), input.ElementType), [1, n]);
            else if (name == "attention_mask")
                s.Inputs[name] = (Cast(Enumerable.Repeat(1L, n).ToArray(), input.ElementType), [1, n]);
            else if (name == "position_ids")
                s.Inputs[name] = (Cast(Enumerable.Range(0, n).Select(i => (long)i).ToArray(), input.ElementType), [1, n]);
            else if (name.StartsWith("past_key_values.", StringComparison.Ordinal) || name.StartsWith("past_", StringComparison.Ordinal) ||
                name.Contains("state", StringComparison.Ordinal))
            {
                // Empty cache: [batch=1, heads, 0, head_dim], or a zero state of the declared fixed shape.
                if (shape is null) throw new BadInputException($"input '{name}' has no shape; cannot make an empty cache for it");
                var dims = shape.Select((d, i) => i == 0 ? 1 : d ?? 0).ToArray();
                if (name.StartsWith("past_key_values.", StringComparison.Ordinal) && dims.Length == 4) dims[2] = 0;
                long count = dims.Aggregate(1L, (a, b) => a * b);
                s.Inputs[name] = (input.ElementType switch
                {
                    (int)DT.Float16 => new Float16[count],
                    (int)DT.Int8 => new sbyte[count],     // a cache stored as integers (quantize_kv storage: native)
                    (int)DT.Uint8 => new byte[count],
                    _ => new float[count],
                }, dims);
            }
            else
                throw new BadInputException($"input '{name}' cannot be filled from token ids; give raw input tensors as calibration data " +
                    $"instead");
        }
        return s;
    }

    private static Array Cast(long[] values, int elemType) => elemType switch
    {
        (int)DT.Int32 => values.Select(v => (int)v).ToArray(),
        (int)DT.Int64 or 0 => values,
        _ => throw new BadInputException($"token inputs must be int32 or int64, not {DataTypes.Name(elemType)}"),
    };

    /// <summary>
    /// The sample's arrays as ORT values that own copies of the data. Not the arrays pinned in place: ONNX Runtime hands a graph input
    /// asked for as an output (a calibrated first layer's input, an output that is an input) back as the same buffer, which must
    /// outlive the inputs. An ORT-allocated input is shared by reference count; a pinned array is unpinned when its input is
    /// disposed, and the garbage collector may then move it under the output (wrong statistics, or a crash).
    /// </summary>
    public static List<(string Name, OrtValue Value)> ToOrt(CalibrationSample sample)
    {
        var list = new List<(string, OrtValue)>();
        try
        {
            foreach (var (name, (data, shape)) in sample.Inputs.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                OrtValue v = data switch
                {
                    float[] f => Owned(f, TensorElementType.Float, shape),
                    long[] l => Owned(l, TensorElementType.Int64, shape),
                    int[] i => Owned(i, TensorElementType.Int32, shape),
                    Float16[] h => Owned(h, TensorElementType.Float16, shape),
                    bool[] b => Owned(b, TensorElementType.Bool, shape),
                    // sbyte[] first: the runtime lets an sbyte[] pass as byte[] (array covariance of same-size integers).
                    sbyte[] s8 when data.GetType() == typeof(sbyte[]) => Owned(s8, TensorElementType.Int8, shape),
                    byte[] u => Owned(u, TensorElementType.UInt8, shape),
                    _ => throw new ArgumentException($"unsupported input array type {data.GetType().Name}"),
                };
                list.Add((name, v));
            }
        }
        catch
        {
            foreach (var (_, v) in list) v.Dispose();
            throw;
        }
        return list;
    }

    private static OrtValue Owned<T>(T[] data, TensorElementType type, long[] shape) where T : unmanaged
    {
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (count != data.Length)
            throw new ArgumentException($"an input of shape [{string.Join(", ", shape)}] needs {count} values, not {data.Length}");
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        if (data.Length > 0) data.AsSpan().CopyTo(v.GetTensorMutableDataAsSpan<T>());
        return v;
    }

    /// <summary>A managed copy of a tensor that <see cref="ToOrt"/> can feed back (float32, float16, int64, int32, bool, uint8, int8).
    /// </summary>
    public static (Array Data, long[] Shape) Copy(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        Array data = info.ElementDataType switch
        {
            TensorElementType.Float => value.GetTensorDataAsSpan<float>().ToArray(),
            TensorElementType.Float16 => value.GetTensorDataAsSpan<Float16>().ToArray(),
            TensorElementType.Int64 => value.GetTensorDataAsSpan<long>().ToArray(),
            TensorElementType.Int32 => value.GetTensorDataAsSpan<int>().ToArray(),
            TensorElementType.Bool => value.GetTensorDataAsSpan<bool>().ToArray(),
            TensorElementType.UInt8 => value.GetTensorDataAsSpan<byte>().ToArray(),
            TensorElementType.Int8 => value.GetTensorDataAsSpan<sbyte>().ToArray(),
            var t => throw new BadInputException($"a tensor of type {t} cannot be carried between runs"),
        };
        return (data, info.Shape);
    }
}
