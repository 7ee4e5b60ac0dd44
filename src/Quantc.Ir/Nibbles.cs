using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantc.Ir;

/// <summary>
/// ONNX's packing of 4-bit elements (INT4, UINT4, FLOAT4E2M1): element i sits in byte i / 2, the even element in the low
/// nibble. The one place that knows it; MatMulNBits' blobs and ai.quantc's chunked layout (Int4Packing) build on it.
/// </summary>
public static class Nibbles
{
    /// <summary>The 4 raw bits of element <paramref name="i"/>.</summary>
    public static int Get(ReadOnlySpan<byte> packed, long i) => (packed[(int)(i >> 1)] >> (int)((i & 1) * 4)) & 0xF;

    /// <summary>Element <paramref name="i"/> read as a signed int4 (−8..7).</summary>
    public static int GetSigned(ReadOnlySpan<byte> packed, long i) => (Get(packed, i) << 28) >> 28;

    /// <summary>Writes the low 4 bits of <paramref name="value"/> as element <paramref name="i"/> of a buffer whose nibble
    /// there is still zero (packing into a fresh array).</summary>
    public static void Put(Span<byte> packed, long i, int value) =>
        packed[(int)(i >> 1)] |= (byte)((value & 0xF) << (int)((i & 1) * 4));

    /// <summary>Packs 4-bit values (signed −8..7 or, with <paramref name="offset"/> 8, stored unsigned) in ONNX order.</summary>
    public static byte[] Pack(ReadOnlySpan<sbyte> values, int offset = 0)
    {
        var packed = new byte[(values.Length + 1) / 2];
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // 64 values at a time: each 16-bit lane holds an (even, odd) pair; its low nibbles are moved into the low byte.
            var bytes = MemoryMarshal.AsBytes(values);
            var off = Vector256.Create((byte)offset);
            var low = Vector256.Create((ushort)0x000F);
            var high = Vector256.Create((ushort)0x00F0);
            for (; i + 64 <= values.Length; i += 64)
            {
                var a = (Vector256.Create(bytes.Slice(i, 32)) + off).AsUInt16();
                var b = (Vector256.Create(bytes.Slice(i + 32, 32)) + off).AsUInt16();
                Vector256.Narrow((a & low) | ((a >> 4) & high), (b & low) | ((b >> 4) & high)).CopyTo(packed.AsSpan(i / 2, 32));
            }
        }
        for (; i < values.Length; i++) Put(packed, i, values[i] + offset);
        return packed;
    }
}
