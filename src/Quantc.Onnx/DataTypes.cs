using Quantc.Onnx.Proto;

namespace Quantc.Onnx;

/// <summary>Facts about ONNX tensor element types (<see cref="TensorProto.Types.DataType"/>).</summary>
public static class DataTypes
{
    /// <summary>Bits per element, or 0 where the type has no fixed size (string, undefined).</summary>
    public static int BitsOf(int dataType) => (TensorProto.Types.DataType)dataType switch
    {
        TensorProto.Types.DataType.Float => 32,
        TensorProto.Types.DataType.Uint8 => 8,
        TensorProto.Types.DataType.Int8 => 8,
        TensorProto.Types.DataType.Uint16 => 16,
        TensorProto.Types.DataType.Int16 => 16,
        TensorProto.Types.DataType.Int32 => 32,
        TensorProto.Types.DataType.Int64 => 64,
        TensorProto.Types.DataType.Bool => 8,
        TensorProto.Types.DataType.Float16 => 16,
        TensorProto.Types.DataType.Double => 64,
        TensorProto.Types.DataType.Uint32 => 32,
        TensorProto.Types.DataType.Uint64 => 64,
        TensorProto.Types.DataType.Complex64 => 64,
        TensorProto.Types.DataType.Complex128 => 128,
        TensorProto.Types.DataType.Bfloat16 => 16,
        TensorProto.Types.DataType.Float8E4M3Fn => 8,
        TensorProto.Types.DataType.Float8E4M3Fnuz => 8,
        TensorProto.Types.DataType.Float8E5M2 => 8,
        TensorProto.Types.DataType.Float8E5M2Fnuz => 8,
        TensorProto.Types.DataType.Uint4 => 4,
        TensorProto.Types.DataType.Int4 => 4,
        TensorProto.Types.DataType.Float4E2M1 => 4,
        TensorProto.Types.DataType.Float8E8M0 => 8,
        TensorProto.Types.DataType.Uint2 => 2,
        TensorProto.Types.DataType.Int2 => 2,
        _ => 0,
    };

    /// <summary>Bytes that <paramref name="count"/> elements take in raw_data (sub-byte types packed, rounded up).</summary>
    public static long ByteSize(int dataType, long count)
    {
        int bits = BitsOf(dataType);
        if (bits == 0) throw new ArgumentException($"data type {Name(dataType)} has no fixed size");
        return checked((count * bits + 7) / 8);
    }

    /// <summary>The lower-case name ONNX uses in its docs (float, float16, int4, float8e4m3fn...).</summary>
    public static string Name(int dataType) => (TensorProto.Types.DataType)dataType switch
    {
        TensorProto.Types.DataType.Float => "float32",
        TensorProto.Types.DataType.Uint8 => "uint8",
        TensorProto.Types.DataType.Int8 => "int8",
        TensorProto.Types.DataType.Uint16 => "uint16",
        TensorProto.Types.DataType.Int16 => "int16",
        TensorProto.Types.DataType.Int32 => "int32",
        TensorProto.Types.DataType.Int64 => "int64",
        TensorProto.Types.DataType.String => "string",
        TensorProto.Types.DataType.Bool => "bool",
        TensorProto.Types.DataType.Float16 => "float16",
        TensorProto.Types.DataType.Double => "float64",
        TensorProto.Types.DataType.Uint32 => "uint32",
        TensorProto.Types.DataType.Uint64 => "uint64",
        TensorProto.Types.DataType.Complex64 => "complex64",
        TensorProto.Types.DataType.Complex128 => "complex128",
        TensorProto.Types.DataType.Bfloat16 => "bfloat16",
        TensorProto.Types.DataType.Float8E4M3Fn => "float8e4m3fn",
        TensorProto.Types.DataType.Float8E4M3Fnuz => "float8e4m3fnuz",
        TensorProto.Types.DataType.Float8E5M2 => "float8e5m2",
        TensorProto.Types.DataType.Float8E5M2Fnuz => "float8e5m2fnuz",
        TensorProto.Types.DataType.Uint4 => "uint4",
        TensorProto.Types.DataType.Int4 => "int4",
        TensorProto.Types.DataType.Float4E2M1 => "float4e2m1",
        TensorProto.Types.DataType.Float8E8M0 => "float8e8m0",
        TensorProto.Types.DataType.Uint2 => "uint2",
        TensorProto.Types.DataType.Int2 => "int2",
        TensorProto.Types.DataType.Undefined => "undefined",
        _ => $"dtype{dataType}",
    };
}
