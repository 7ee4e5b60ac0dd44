using System.Runtime.InteropServices;
using Google.Protobuf;
using Quantc.Onnx;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir;

/// <summary>
/// A constant tensor: element type, shape, and bytes that live inline (as loaded), in memory
/// (made by a pass) or in a memory-mapped slice of an external data file. Nothing is read or
/// copied until the bytes are asked for.
/// </summary>
public sealed class Tensor
{
    private readonly TensorProto? _proto;     // as loaded; kept so an untouched tensor writes back byte-identical
    private TensorData? _data;                // raw little-endian bytes (external, or packed lazily from the proto)

    private Tensor(string name, int dataType, long[] dims, TensorProto? proto, TensorData? data)
    {
        Name = name;
        DataType = dataType;
        Dims = dims;
        _proto = proto;
        _data = data;
    }

    /// <summary>Name as stored (the initializer's value name).</summary>
    public string Name { get; internal set; }

    /// <summary>ONNX element type (TensorProto.DataType).</summary>
    public int DataType { get; }

    /// <summary>Shape.</summary>
    public long[] Dims { get; }

    /// <summary>Product of the dimensions.</summary>
    public long ElementCount => Dims.Aggregate(1L, (a, d) => checked(a * d));

    /// <summary>Number of payload bytes.</summary>
    public long ByteLength => DataType == (int)DT.String ? (_proto?.StringData.Sum(s => (long)s.Length) ?? 0)
        : DataTypes.ByteSize(DataType, ElementCount);

    /// <summary>True when the bytes are a slice of a memory-mapped external file.</summary>
    public bool IsExternal => _data is MappedTensorData;

    /// <summary>The loaded proto this tensor came from, if any.</summary>
    public TensorProto? SourceProto => _proto;

    /// <summary>Wraps a loaded TensorProto; <paramref name="external"/> carries its bytes when it is external.</summary>
    public static Tensor FromProto(TensorProto proto, TensorData? external = null) =>
        new(proto.Name, proto.DataType, proto.Dims.ToArray(), proto, external);

    /// <summary>A tensor over raw little-endian bytes (not copied).</summary>
    public static Tensor FromBytes(string name, int dataType, long[] dims, ReadOnlyMemory<byte> bytes)
    {
        var t = new Tensor(name, dataType, dims, null, TensorData.FromMemory(bytes));
        if (bytes.Length != t.ByteLength)
            throw new ArgumentException($"tensor '{name}': {bytes.Length} bytes given, shape needs {t.ByteLength}");
        return t;
    }

    /// <summary>A tensor over any byte source (e.g. a mapped slice).</summary>
    public static Tensor FromData(string name, int dataType, long[] dims, TensorData data)
    {
        var t = new Tensor(name, dataType, dims, null, data);
        if (data.Length != t.ByteLength)
            throw new ArgumentException($"tensor '{name}': {data.Length} bytes given, shape needs {t.ByteLength}");
        return t;
    }

    /// <summary>A tensor of unmanaged values (copied).</summary>
    public static Tensor FromValues<T>(string name, int dataType, long[] dims, ReadOnlySpan<T> values) where T : unmanaged =>
        FromBytes(name, dataType, dims, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>A float32 tensor (copied).</summary>
    public static Tensor FromFloats(string name, long[] dims, ReadOnlySpan<float> values) => FromValues(name, (int)DT.Float, dims, values);

    /// <summary>The raw little-endian bytes (for sub-byte types: packed, low bits first).</summary>
    public TensorData Data
    {
        get
        {
            if (_data is null)
            {
                if (_proto is null) throw new InvalidOperationException("tensor has no data");
                if (_proto.DataType == (int)DT.String) throw new InvalidOperationException($"tensor '{Name}' holds strings, not bytes");
                _data = TensorData.FromMemory(TensorBytes.InlineBytes(_proto));
            }
            return _data;
        }
    }

    /// <summary>
    /// Takes the pages of an external tensor that were read through the map out of resident memory (they stay in the page
    /// cache; see <see cref="MappedFile.DropPages"/>). A span taken before stays valid. Nothing to do for other tensors.
    /// </summary>
    public void DropPages()
    {
        if (_data is MappedTensorData m) m.DropPages();
    }

    /// <summary>
    /// This tensor with its bytes moved to <paramref name="file"/> when a pass made them in memory and they are at least
    /// <paramref name="minBytes"/> long; otherwise this tensor itself.
    /// </summary>
    internal Tensor SpilledTo(SpillFile file, long minBytes)
    {
        if (_proto is not null || _data is not MemoryTensorData mem || mem.Length < minBytes) return this;
        return new Tensor(Name, DataType, Dims, null, file.Write(mem.Memory.Span));
    }

    /// <summary>The elements as a typed span (the element size must match the data type's).</summary>
    public ReadOnlySpan<T> AsSpan<T>() where T : unmanaged
    {
        int bits = DataTypes.BitsOf(DataType);
        if (bits != Marshal.SizeOf<T>() * 8 && !(DataType is (int)DT.Complex64 && typeof(T) == typeof(float)) &&
            !(DataType is (int)DT.Complex128 && typeof(T) == typeof(double)))
            throw new InvalidOperationException($"tensor '{Name}' is {DataTypes.Name(DataType)}; cannot view it as {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(Data.Span);
    }

    /// <summary>The strings of a string tensor.</summary>
    public IReadOnlyList<byte[]> Strings => _proto is { DataType: (int)DT.String } p ? p.StringData.Select(s => s.ToByteArray()).ToList()
        : throw new InvalidOperationException($"tensor '{Name}' is not a string tensor");

    /// <summary>Every element converted to float32 (from any numeric type, including fp16, bf16, fp8, fp4, int4, int2).</summary>
    public float[] ToFloat32()
    {
        long n = ElementCount;
        var result = new float[checked((int)n)];
        NumericConvert.ToFloat32(DataType, Data.Span, result);
        DropPages();
        return result;
    }

    /// <summary>
    /// The proto for writing. An untouched loaded tensor gives back its own proto. Otherwise a new
    /// proto with no data is made and marked EXTERNAL; its bytes come from <paramref name="payload"/>
    /// and the writer decides whether they go inline or external.
    /// </summary>
    public TensorProto ToProto(string name, out TensorData? payload)
    {
        if (_proto is not null)
        {
            payload = _proto.DataLocation == TensorProto.Types.DataLocation.External ? _data : null;
            if (_proto.Name == name) return _proto;
            var renamed = _proto.Clone();
            renamed.Name = name;
            return renamed;
        }
        var p = new TensorProto { Name = name, DataType = DataType };
        p.Dims.AddRange(Dims);
        if (_data is MemoryTensorData mem && mem.Length < (1 << 20))
        {
            p.RawData = UnsafeByteOperations.UnsafeWrap(mem.Memory);
            payload = null;
        }
        else if (_data is SpilledTensorData spilled && spilled.Length < (1 << 20))
        {
            p.RawData = UnsafeByteOperations.UnsafeWrap(spilled.Span.ToArray());   // as if it were still in memory
            payload = null;
        }
        else
        {
            p.DataLocation = TensorProto.Types.DataLocation.External;
            payload = _data;
        }
        return p;
    }
}

/// <summary>Element conversions between ONNX numeric types and float32.</summary>
public static class NumericConvert
{
    /// <summary>Decodes <paramref name="src"/> (raw bytes of <paramref name="dataType"/>) into float32.</summary>
    public static void ToFloat32(int dataType, ReadOnlySpan<byte> src, Span<float> dst)
    {
        int n = dst.Length;
        switch ((DT)dataType)
        {
            case DT.Float: MemoryMarshal.Cast<byte, float>(src)[..n].CopyTo(dst); break;
            case DT.Double: { var s = MemoryMarshal.Cast<byte, double>(src); for (int i = 0; i < n; i++) dst[i] = (float)s[i]; break; }
            case DT.Float16: System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src)[..n], dst); break;
            case DT.Bfloat16: { var s = MemoryMarshal.Cast<byte,
                ushort>(src); for (int i = 0; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16); break; }
            case DT.Int8: { var s = MemoryMarshal.Cast<byte, sbyte>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Uint8: case DT.Bool: for (int i = 0; i < n; i++) dst[i] = src[i]; break;
            case DT.Int16: { var s = MemoryMarshal.Cast<byte, short>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Uint16: { var s = MemoryMarshal.Cast<byte, ushort>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Int32: { var s = MemoryMarshal.Cast<byte, int>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Uint32: { var s = MemoryMarshal.Cast<byte, uint>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Int64: { var s = MemoryMarshal.Cast<byte, long>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Uint64: { var s = MemoryMarshal.Cast<byte, ulong>(src); for (int i = 0; i < n; i++) dst[i] = s[i]; break; }
            case DT.Float8E4M3Fn: for (int i = 0; i < n; i++) dst[i] = Float8E4M3FnToFloat(src[i]); break;
            case DT.Float8E4M3Fnuz: for (int i = 0; i < n; i++) dst[i] = Float8E4M3FnuzToFloat(src[i]); break;
            case DT.Float8E5M2: for (int i = 0; i < n; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf((ushort)(src[i] << 8)); break;
            case DT.Float8E5M2Fnuz: for (int i = 0; i < n; i++) dst[i] = Float8E5M2FnuzToFloat(src[i]); break;
            case DT.Float8E8M0: for (int i = 0; i < n; i++) dst[i] = src[i] == 0xFF ? float.NaN : MathF.ScaleB(1f, src[i] - 127); break;
            case DT.Int4: for (int i = 0; i < n; i++) dst[i] = Nibbles.GetSigned(src, i); break;
            case DT.Uint4: for (int i = 0; i < n; i++) dst[i] = Nibbles.Get(src, i); break;
            case DT.Float4E2M1: for (int i = 0; i < n; i++) dst[i] = Float4E2M1ToFloat(Nibbles.Get(src, i)); break;
            case DT.Int2: for (int i = 0; i < n; i++) dst[i] = SignExtend((src[i / 4] >> (i % 4 * 2)) & 3, 2); break;
            case DT.Uint2: for (int i = 0; i < n; i++) dst[i] = (src[i / 4] >> (i % 4 * 2)) & 3; break;
            default: throw new InvalidOperationException($"cannot convert {DataTypes.Name(dataType)} to float32");
        }
    }

    private static int SignExtend(int v, int bits) => (v << (32 - bits)) >> (32 - bits);

    /// <summary>Decodes a float with 1 sign bit, an exponent (bias <paramref name="bias"/>) and <paramref name="mbits"/> mantissa bits
    /// (finite encodings only).</summary>
    private static float DecodeMinifloat(int sign, int e, int m, int bias, int mbits)
    {
        float mag = e == 0 ? MathF.ScaleB(m, 1 - bias - mbits) : MathF.ScaleB((1 << mbits) + m, e - bias - mbits);
        return sign != 0 ? -mag : mag;
    }

    /// <summary>float8 e4m3fn: bias 7, no infinities, NaN = S.1111.111.</summary>
    public static float Float8E4M3FnToFloat(byte b)
    {
        if ((b & 0x7F) == 0x7F) return float.NaN;
        return DecodeMinifloat(b >> 7, (b >> 3) & 0xF, b & 7, 7, 3);
    }

    /// <summary>float8 e4m3fnuz: bias 8, no infinities or negative zero, NaN = 0x80.</summary>
    public static float Float8E4M3FnuzToFloat(byte b)
    {
        if (b == 0x80) return float.NaN;
        return DecodeMinifloat(b >> 7, (b >> 3) & 0xF, b & 7, 8, 3);
    }

    /// <summary>float8 e5m2fnuz: bias 16, no infinities or negative zero, NaN = 0x80.</summary>
    public static float Float8E5M2FnuzToFloat(byte b)
    {
        if (b == 0x80) return float.NaN;
        return DecodeMinifloat(b >> 7, (b >> 2) & 0x1F, b & 3, 16, 2);
    }

    /// <summary>float4 e2m1: bias 1, values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}.</summary>
    public static float Float4E2M1ToFloat(int v) => DecodeMinifloat((v >> 3) & 1, (v >> 1) & 3, v & 1, 1, 1);
}
