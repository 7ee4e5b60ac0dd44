using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Onnx.Tests;

/// <summary>Converts between TensorProtos and ONNX Runtime values for tests.</summary>
internal static class OrtTensors
{
    /// <summary>ORT's element type for an ONNX data type (the enums share their numbers), or null for types this helper does not handle.</summary>
    public static TensorElementType? ElementType(int dt) =>
        dt is (int)DT.String or (int)DT.Complex64 or (int)DT.Complex128 or (int)DT.Float4E2M1 || DataTypes.BitsOf(dt) == 0 || !Enum.IsDefined((TensorElementType)dt)
            ? null
            : (TensorElementType)dt;

    /// <summary>An OrtValue holding a copy of the tensor's data, or null for types this helper does not handle.</summary>
    public static OrtValue? ToOrt(TensorProto t)
    {
        if (ElementType(t.DataType) is not { } et) return null;
        var bytes = TensorBytes.InlineBytes(t).Span;
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, et, t.Dims.ToArray());
        bytes.CopyTo(v.GetTensorMutableRawData());
        return v;
    }

    /// <summary>Every element as double (bool as 0/1); 64-bit types exactly.</summary>
    public static double[] AsDoubles(int dt, ReadOnlySpan<byte> raw, long count)
    {
        switch (dt)
        {
            case (int)DT.Double: return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(raw)[..(int)count].ToArray();
            case (int)DT.Int64: return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(raw)[..(int)count].ToArray().Select(x => (double)x).ToArray();
            case (int)DT.Uint64: return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(raw)[..(int)count].ToArray().Select(x => (double)x).ToArray();
            case (int)DT.Int32: return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(raw)[..(int)count].ToArray().Select(x => (double)x).ToArray();
            case (int)DT.Uint32: return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(raw)[..(int)count].ToArray().Select(x => (double)x).ToArray();
        }
        var f = new float[count];
        NumericConvert.ToFloat32(dt, raw, f);
        return f.Select(x => (double)x).ToArray();
    }

    /// <summary>The elements of an ORT tensor as doubles; empty for types this helper does not handle (<paramref name="dataType"/> 0).</summary>
    public static double[] AsDoubles(OrtValue v, out int dataType)
    {
        var info = v.GetTensorTypeAndShape();
        dataType = (int)info.ElementDataType;
        if (ElementType(dataType) is null) { dataType = 0; return []; }
        return AsDoubles(dataType, v.GetTensorDataAsSpan<byte>(), info.ElementCount);
    }
}
