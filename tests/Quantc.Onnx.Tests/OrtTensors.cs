using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Onnx.Tests;

/// <summary>Converts between TensorProtos and ONNX Runtime values for tests.</summary>
internal static class OrtTensors
{
    public static TensorElementType? ElementType(int dt) => (DT)dt switch
    {
        DT.Float => TensorElementType.Float,
        DT.Double => TensorElementType.Double,
        DT.Float16 => TensorElementType.Float16,
        DT.Bfloat16 => TensorElementType.BFloat16,
        DT.Int8 => TensorElementType.Int8,
        DT.Uint8 => TensorElementType.UInt8,
        DT.Int16 => TensorElementType.Int16,
        DT.Uint16 => TensorElementType.UInt16,
        DT.Int32 => TensorElementType.Int32,
        DT.Uint32 => TensorElementType.UInt32,
        DT.Int64 => TensorElementType.Int64,
        DT.Uint64 => TensorElementType.UInt64,
        DT.Bool => TensorElementType.Bool,
        _ => null,
    };

    /// <summary>An OrtValue holding a copy of the tensor's data, or null for types this helper does not handle.</summary>
    public static OrtValue? ToOrt(TensorProto t)
    {
        if (ElementType(t.DataType) is not { } et) return null;
        var bytes = TensorBytes.InlineBytes(t).Span;
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, et, t.Dims.ToArray());
        bytes.CopyTo(v.GetTensorMutableRawData());
        return v;
    }

    /// <summary>Every element as double (bool as 0/1).</summary>
    public static double[] AsDoubles(int dt, ReadOnlySpan<byte> raw, long count)
    {
        var f = new float[count];
        if (dt == (int)DT.Double)
        {
            var d = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(raw);
            return d[..(int)count].ToArray();
        }
        if (dt is (int)DT.Int64)
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(raw)[..(int)count].ToArray().Select(x => (double)x).ToArray();
        NumericConvert.ToFloat32(dt, raw, f);
        return f.Select(x => (double)x).ToArray();
    }

    public static double[] AsDoubles(OrtValue v, out int dataType)
    {
        var info = v.GetTensorTypeAndShape();
        dataType = info.ElementDataType switch
        {
            TensorElementType.Float => (int)DT.Float,
            TensorElementType.Double => (int)DT.Double,
            TensorElementType.Float16 => (int)DT.Float16,
            TensorElementType.BFloat16 => (int)DT.Bfloat16,
            TensorElementType.Int8 => (int)DT.Int8,
            TensorElementType.UInt8 => (int)DT.Uint8,
            TensorElementType.Int16 => (int)DT.Int16,
            TensorElementType.UInt16 => (int)DT.Uint16,
            TensorElementType.Int32 => (int)DT.Int32,
            TensorElementType.UInt32 => (int)DT.Uint32,
            TensorElementType.Int64 => (int)DT.Int64,
            TensorElementType.UInt64 => (int)DT.Uint64,
            TensorElementType.Bool => (int)DT.Bool,
            _ => 0,
        };
        if (dataType == 0) return [];
        return AsDoubles(dataType, v.GetTensorDataAsSpan<byte>(), info.ElementCount);
    }
}
