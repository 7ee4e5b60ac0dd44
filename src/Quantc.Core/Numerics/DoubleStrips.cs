using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantc.Core.Numerics;

/// <summary>
/// Register-held tiles of float64 sums for GPTQ's Hessian, factor and error updates: acc[r, c] ← acc[r, c] ± a[r, t]·b[t, c] for
/// a run of terms t, taken in the order given. Each element gets the same operations in the same order as the textbook loops they
/// replace (the product rounded, then the sum; no fused multiply-add), so the results are bit-identical, but the sums stay in
/// registers while the terms stream by, and one load of b's row t serves every row of the tile.
/// </summary>
internal static class DoubleStrips
{
    /// <summary>Rows of a <see cref="Tile{TOp}"/>.</summary>
    public const int TileRows = 4;

    /// <summary>Columns of a <see cref="Tile{TOp}"/>: two 256-bit vectors.</summary>
    public const int TileColumns = 8;

    /// <summary>
    /// A tile of <paramref name="rows"/> × <see cref="TileColumns"/> sums, acc[r·8 + c] ← acc[r·8 + c] ± a[aOffset + r·aStride + t]·
    /// b[bOffset + t·bStride + c], t ascending in [t0, t1): each element gets its terms one at a time in that order (the product
    /// rounded, then the sum), but a broadcast of A and a load of B serve a whole tile of sums held in registers (4 × 8 for a full
    /// tile). Fewer rows, or no 256-bit vectors, go element by element with the same operations.
    /// </summary>
    public static void Tile<TOp>(Span<double> acc, int rows, double[] a, long aOffset, int aStride, double[] b, long bOffset, int bStride,
        int t0, int t1) where TOp : struct, IOp
    {
        if (t1 <= t0) return;
        if (rows < 1 || rows > TileRows || acc.Length < rows * TileColumns) throw new ArgumentOutOfRangeException(nameof(rows));
        Check(rows, a, aOffset, aStride, b, bOffset, bStride, t0, t1);
        Run<TOp>(ref MemoryMarshal.GetReference(acc), TileColumns, rows, a, aOffset, aStride, b, bOffset, bStride, t0, t1);
    }

    /// <summary>The same tile with its sums in place: c[cOffset + r·cStride + col], col &lt; 8 (a matrix's rows, no copy).</summary>
    public static void TileInPlace<TOp>(double[] c, long cOffset, int cStride, int rows, double[] a, long aOffset, int aStride, double[] b,
        long bOffset, int bStride, int t0, int t1) where TOp : struct, IOp
    {
        if (t1 <= t0) return;
        if (rows < 1 || rows > TileRows || cOffset < 0 || cOffset + (long)(rows - 1) * cStride + TileColumns > c.Length)
            throw new ArgumentOutOfRangeException(nameof(c));
        Check(rows, a, aOffset, aStride, b, bOffset, bStride, t0, t1);
        Run<TOp>(ref c[cOffset], cStride, rows, a, aOffset, aStride, b, bOffset, bStride, t0, t1);
    }

    private static void Check(int rows, double[] a, long aOffset, int aStride, double[] b, long bOffset, int bStride, int t0, int t1)
    {
        if (aOffset < 0 || aOffset + (long)(rows - 1) * aStride + t1 > a.Length || aOffset + t0 < 0)
            throw new ArgumentOutOfRangeException(nameof(a));
        if (bOffset + (long)t0 * bStride < 0 || bOffset + (long)(t1 - 1) * bStride + TileColumns > b.Length)
            throw new ArgumentOutOfRangeException(nameof(b));
    }

    private static void Run<TOp>(ref double c, int cStride, int rows, double[] a, long aOffset, int aStride, double[] b, long bOffset,
        int bStride, int t0, int t1) where TOp : struct, IOp
    {
        if (rows == TileRows && Vector256.IsHardwareAccelerated)
        {
            ref double ar = ref MemoryMarshal.GetArrayDataReference(a);
            ref double br = ref MemoryMarshal.GetArrayDataReference(b);
            nuint c1 = (nuint)cStride, c2 = c1 + c1, c3 = c2 + c1;
            var s00 = Vector256.LoadUnsafe(ref c);
            var s01 = Vector256.LoadUnsafe(ref c, 4);
            var s10 = Vector256.LoadUnsafe(ref c, c1);
            var s11 = Vector256.LoadUnsafe(ref c, c1 + 4);
            var s20 = Vector256.LoadUnsafe(ref c, c2);
            var s21 = Vector256.LoadUnsafe(ref c, c2 + 4);
            var s30 = Vector256.LoadUnsafe(ref c, c3);
            var s31 = Vector256.LoadUnsafe(ref c, c3 + 4);
            nuint a0 = (nuint)aOffset, a1 = a0 + (nuint)aStride, a2 = a1 + (nuint)aStride, a3 = a2 + (nuint)aStride;
            for (int t = t0; t < t1; t++)
            {
                nuint o = (nuint)(bOffset + (long)t * bStride);
                var b0 = Vector256.LoadUnsafe(ref br, o);
                var b1 = Vector256.LoadUnsafe(ref br, o + 4);
                nuint u = (nuint)t;
                var x = Vector256.Create(Unsafe.Add(ref ar, a0 + u));
                s00 = TOp.Apply(s00, x * b0);
                s01 = TOp.Apply(s01, x * b1);
                x = Vector256.Create(Unsafe.Add(ref ar, a1 + u));
                s10 = TOp.Apply(s10, x * b0);
                s11 = TOp.Apply(s11, x * b1);
                x = Vector256.Create(Unsafe.Add(ref ar, a2 + u));
                s20 = TOp.Apply(s20, x * b0);
                s21 = TOp.Apply(s21, x * b1);
                x = Vector256.Create(Unsafe.Add(ref ar, a3 + u));
                s30 = TOp.Apply(s30, x * b0);
                s31 = TOp.Apply(s31, x * b1);
            }
            s00.StoreUnsafe(ref c);
            s01.StoreUnsafe(ref c, 4);
            s10.StoreUnsafe(ref c, c1);
            s11.StoreUnsafe(ref c, c1 + 4);
            s20.StoreUnsafe(ref c, c2);
            s21.StoreUnsafe(ref c, c2 + 4);
            s30.StoreUnsafe(ref c, c3);
            s31.StoreUnsafe(ref c, c3 + 4);
            return;
        }
        for (int r = 0; r < rows; r++)
            for (int col = 0; col < TileColumns; col++)
            {
                ref double sum = ref Unsafe.Add(ref c, (nint)r * cStride + col);
                double s = sum;
                for (int t = t0; t < t1; t++) s = TOp.Apply(s, a[aOffset + (long)r * aStride + t] * b[bOffset + (long)t * bStride + col]);
                sum = s;
            }
    }

    /// <summary>How a term joins a sum: + or −. (s − p equals s + (−p) bit for bit, so either spelling of the textbook update
    /// gives the same result.)</summary>
    public interface IOp
    {
        static abstract Vector256<double> Apply(Vector256<double> sum, Vector256<double> term);

        static abstract double Apply(double sum, double term);
    }

    /// <summary>sum + term.</summary>
    public readonly struct Add : IOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<double> Apply(Vector256<double> sum, Vector256<double> term) => sum + term;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static double Apply(double sum, double term) => sum + term;
    }

    /// <summary>sum − term.</summary>
    public readonly struct Sub : IOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<double> Apply(Vector256<double> sum, Vector256<double> term) => sum - term;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static double Apply(double sum, double term) => sum - term;
    }
}
