using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Numerics;

/// <summary>A quantized element type and its integer or floating-point grid.</summary>
public sealed record QuantFormat(string Name, int DataType, int Bits, bool IsFloat, double Min, double Max)
{
    public static readonly QuantFormat Int8 = new("int8", (int)DT.Int8, 8, false, -128, 127);
    public static readonly QuantFormat UInt8 = new("uint8", (int)DT.Uint8, 8, false, 0, 255);
    public static readonly QuantFormat Int4 = new("int4", (int)DT.Int4, 4, false, -8, 7);
    public static readonly QuantFormat UInt4 = new("uint4", (int)DT.Uint4, 4, false, 0, 15);
    public static readonly QuantFormat Int16 = new("int16", (int)DT.Int16, 16, false, -32768, 32767);
    public static readonly QuantFormat Float8E4M3Fn = new("float8e4m3fn", (int)DT.Float8E4M3Fn, 8, true, -448, 448);
    public static readonly QuantFormat Float8E5M2 = new("float8e5m2", (int)DT.Float8E5M2, 8, true, -57344, 57344);

    /// <summary>A 7-bit signed grid stored in int8 (not an ONNX type: lowered as int8).</summary>
    public static readonly QuantFormat Int7 = new("int7", Int8.DataType, 8, false, -64, 63);

    /// <summary>A 6-bit signed grid stored in int8 (not an ONNX type: lowered as int8).</summary>
    public static readonly QuantFormat Int6 = new("int6", Int8.DataType, 8, false, -32, 31);

    /// <summary>Every format quantc emits.</summary>
    public static IReadOnlyList<QuantFormat> All { get; } = [Int8, UInt8, Int4, UInt4, Int16, Float8E4M3Fn, Float8E5M2];

    /// <summary>The format named <paramref name="name"/> (int8, uint8, int4, uint4, fp8/e4m3, e5m2...).</summary>
    public static QuantFormat Parse(string name) => name.ToLowerInvariant() switch
    {
        "int8" or "i8" => Int8,
        "uint8" or "u8" => UInt8,
        "int4" or "i4" => Int4,
        "uint4" or "u4" => UInt4,
        "int16" => Int16,
        "fp8" or "e4m3" or "float8e4m3fn" or "fp8e4m3" => Float8E4M3Fn,
        "e5m2" or "float8e5m2" or "fp8e5m2" => Float8E5M2,
        _ => throw new BadInputException($"unknown quantization format '{name}' (int8, uint8, int4, uint4, int16, fp8e4m3, fp8e5m2)"),
    };

    /// <summary>True for signed integer formats and float8 (symmetric around 0).</summary>
    public bool IsSigned => Min < 0;

    /// <summary>Bytes that <paramref name="count"/> elements occupy (sub-byte formats packed).</summary>
    public long ByteSize(long count) => DataTypes.ByteSize(DataType, count);
}
