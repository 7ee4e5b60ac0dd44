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
        for (int i = 0; i < values.Length; i++) Put(packed, i, values[i] + offset);
        return packed;
    }
}
