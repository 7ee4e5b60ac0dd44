using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Onnx;

/// <summary>Converts between a TensorProto's typed fields and raw little-endian bytes.</summary>
public static class TensorBytes
{
    /// <summary>Element count of a tensor's shape.</summary>
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (long d in t.Dims) n = checked(n * d);
        return n;
    }

    /// <summary>
    /// The tensor's data as raw little-endian bytes, as raw_data would hold it.
    /// For an inline raw_data tensor this is the raw_data itself (not copied); for typed
    /// fields the values are packed. External tensors are not handled here (see <see cref="OnnxModelFile.ExternalDataOf"/>).
    /// </summary>
    public static ReadOnlyMemory<byte> InlineBytes(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new InvalidOperationException($"tensor '{t.Name}' is external");
        if (t.HasRawData) return t.RawData.Memory;
        var dt = (DT)t.DataType;
        long count = ElementCount(t);
        switch (dt)
        {
            case DT.Float:
            case DT.Complex64:
                return MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray();
            case DT.Double:
            case DT.Complex128:
                return MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).ToArray();
            case DT.Int64:
                return MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).ToArray();
            case DT.Uint64:
                return MemoryMarshal.AsBytes(t.Uint64Data.ToArray().AsSpan()).ToArray();
            case DT.Uint32:
            {
                var b = new byte[t.Uint64Data.Count * 4];
                for (int i = 0; i < t.Uint64Data.Count; i++)
                    BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(i * 4), (uint)t.Uint64Data[i]);
                return b;
            }
            case DT.Int32:
                return MemoryMarshal.AsBytes(t.Int32Data.ToArray().AsSpan()).ToArray();
            case DT.Int16:
            case DT.Uint16:
            case DT.Float16:
            case DT.Bfloat16:
            {
                var b = new byte[t.Int32Data.Count * 2];
                for (int i = 0; i < t.Int32Data.Count; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(i * 2), (ushort)t.Int32Data[i]);
                return b;
            }
            case DT.Int8:
            case DT.Uint8:
            case DT.Bool:
            case DT.Float8E4M3Fn:
            case DT.Float8E4M3Fnuz:
            case DT.Float8E5M2:
            case DT.Float8E5M2Fnuz:
            case DT.Float8E8M0:
            {
                var b = new byte[t.Int32Data.Count];
                for (int i = 0; i < b.Length; i++) b[i] = (byte)t.Int32Data[i];
                return b;
            }
            case DT.Int4:
            case DT.Uint4:
            case DT.Float4E2M1:
            case DT.Int2:
            case DT.Uint2:
            {
                // Each int32 holds one packed byte (two 4-bit or four 2-bit values, low bits first).
                long bytes = DataTypes.ByteSize(t.DataType, count);
                var b = new byte[bytes];
                if (t.Int32Data.Count == bytes)
                {
                    for (int i = 0; i < b.Length; i++) b[i] = (byte)t.Int32Data[i];
                }
                else
                {
                    // One value per int32: pack.
                    int bits = DataTypes.BitsOf(t.DataType);
                    int mask = (1 << bits) - 1;
                    for (int i = 0; i < t.Int32Data.Count; i++)
                        b[i * bits / 8] |= (byte)((t.Int32Data[i] & mask) << (i * bits % 8));
                }
                return b;
            }
            default:
                throw new BadInputException($"tensor '{t.Name}': data type {DataTypes.Name(t.DataType)} has no raw byte form");
        }
    }

    /// <summary>Number of payload bytes the tensor carries (external length, raw_data length, or packed typed values).</summary>
    public static long PayloadBytes(TensorProto t, TensorData? external)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            return external?.Length ?? throw new InvalidOperationException($"tensor '{t.Name}' is external but its data is not available");
        if (t.HasRawData) return t.RawData.Length;
        if (t.DataType == (int)DT.String) return t.StringData.Sum(s => (long)s.Length);
        int bits = DataTypes.BitsOf(t.DataType);
        return bits == 0 ? 0 : DataTypes.ByteSize(t.DataType, ElementCount(t));
    }

    /// <summary>Clears every data field of a tensor (raw, typed, external), keeping name, type, shape and other metadata.</summary>
    public static void ClearData(TensorProto t)
    {
        t.ClearRawData();
        t.FloatData.Clear();
        t.Int32Data.Clear();
        t.StringData.Clear();
        t.Int64Data.Clear();
        t.DoubleData.Clear();
        t.Uint64Data.Clear();
        t.ExternalData.Clear();
        t.ClearDataLocation();
    }

    /// <summary>Sets raw_data (copying the bytes into the proto).</summary>
    public static void SetRaw(TensorProto t, ReadOnlySpan<byte> bytes)
    {
        ClearData(t);
        t.RawData = ByteString.CopyFrom(bytes);
    }
}
