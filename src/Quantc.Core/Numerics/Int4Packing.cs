namespace Quantc.Core.Numerics;

/// <summary>
/// The int4 weight layout of ai.quantc.MatMulInt4Int8: per output channel, K split in chunks of 64;
/// byte j (0..31) of a chunk holds k = j in its low nibble and k = j + 32 in its high nibble, so a
/// kernel unpacks 64 contiguous k's with one mask and one shift.
/// </summary>
public static class Int4Packing
{
    /// <summary>Packs int4 values ([N, K] row-major, each in [-8, 7]) into [N, K/2] bytes. K must be a multiple of 64.</summary>
    public static byte[] PackChunked(ReadOnlySpan<sbyte> w, int n, int k)
    {
        if (k % 64 != 0) throw new ArgumentException($"K = {k} must be a multiple of 64");
        if (w.Length != n * k) throw new ArgumentException("values do not fill [N, K]");
        var packed = new byte[n * k / 2];
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k / 64; c++)
                for (int j = 0; j < 32; j++)
                {
                    int lo = w[r * k + 64 * c + j] & 0xF, hi = w[r * k + 64 * c + 32 + j] & 0xF;
                    packed[r * (k / 2) + 32 * c + j] = (byte)(lo | (hi << 4));
                }
        return packed;
    }

    /// <summary>
    /// Packs int4 values ([N, K] row-major, each in [-8, 7]) into [N, ceil(K/2)] bytes in pairs: byte j of a row holds k = 2j in its
    /// low nibble and k = 2j + 1 in its high nibble (ONNX's int4 order along each row; ai.quantc.MatMulInt4Fp8's layout).
    /// </summary>
    public static byte[] PackPairs(ReadOnlySpan<sbyte> w, int n, int k)
    {
        if (w.Length != n * k) throw new ArgumentException("values do not fill [N, K]");
        int row = (k + 1) / 2;
        var packed = new byte[n * row];
        for (int r = 0; r < n; r++)
            for (int j = 0; j < k; j++) packed[r * row + j / 2] |= (byte)((w[r * k + j] & 0xF) << ((j & 1) * 4));
        return packed;
    }
}
