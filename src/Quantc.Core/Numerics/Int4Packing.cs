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
}
