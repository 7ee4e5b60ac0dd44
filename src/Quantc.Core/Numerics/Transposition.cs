using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantc.Core.Numerics;

/// <summary>
/// Matrix transposes for weight layouts (ONNX MatMul's [K, N] against the quantizers' [N, K]): dst[cols, rows] = src[rows, cols]ᵀ,
/// by square tiles that stay in L1 (8×8 AVX blocks for float32), blocks of source rows spread over the thread pool when the
/// matrix is large. A copy: the same values whatever the path.
/// </summary>
public static class Transposition
{
    /// <summary>Matrices of at least this many elements are transposed on the thread pool.</summary>
    public const long ParallelElements = 1 << 18;

    // Rows of the source per work item and the tile edge (a 64 × 64 float tile is 16 KiB on each side).
    private const int RowsPerItem = 64, Tile = 64;

    /// <summary>dst[cols, rows] = src[rows, cols]ᵀ for float32.</summary>
    public static void Floats(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols) => Run(src, dst, rows, cols);

    /// <summary>dst[cols, rows] = src[rows, cols]ᵀ for bytes (int8 / uint8 weights).</summary>
    public static void Bytes(ReadOnlySpan<sbyte> src, Span<sbyte> dst, int rows, int cols) => Run(src, dst, rows, cols);

    private static unsafe void Run<T>(ReadOnlySpan<T> src, Span<T> dst, int rows, int cols) where T : unmanaged
    {
        if (rows < 0 || cols < 0) throw new ArgumentException("negative matrix size");
        long count = (long)rows * cols;
        if (src.Length < count || dst.Length < count) throw new ArgumentException($"a {rows}×{cols} transpose needs {count} elements");
        if (count == 0) return;
        fixed (T* s = src)
        fixed (T* d = dst)
        {
            nint sa = (nint)s, da = (nint)d;
            int items = (rows + RowsPerItem - 1) / RowsPerItem;
            if (count < ParallelElements) Rows((T*)sa, (T*)da, rows, cols, 0, rows);
            else
                Parallel.For(0, items, b =>
                    Rows((T*)sa, (T*)da, rows, cols, b * RowsPerItem, Math.Min(rows, (b + 1) * RowsPerItem)));
        }
    }

    // Source rows [r0, r1), all columns, tile by tile.
    private static unsafe void Rows<T>(T* src, T* dst, int rows, int cols, int r0, int r1) where T : unmanaged
    {
        for (int c0 = 0; c0 < cols; c0 += Tile)
        {
            int c1 = Math.Min(cols, c0 + Tile);
            int i = r0;
            if (typeof(T) == typeof(float) && Avx.IsSupported)
                for (; i + 8 <= r1; i += 8)
                {
                    int j = c0;
                    for (; j + 8 <= c1; j += 8)
                        Transpose8(ref Unsafe.AsRef<float>(src + (long)i * cols + j), cols,
                            ref Unsafe.AsRef<float>(dst + (long)j * rows + i), rows);
                    for (; j < c1; j++)
                        for (int q = i; q < i + 8; q++) dst[(long)j * rows + q] = src[(long)q * cols + j];
                }
            if (sizeof(T) == 1 && Sse2.IsSupported)
                for (; i + 8 <= r1; i += 8)
                {
                    int j = c0;
                    for (; j + 8 <= c1; j += 8)
                        Transpose8Bytes((byte*)src + (long)i * cols + j, cols, (byte*)dst + (long)j * rows + i, rows);
                    for (; j < c1; j++)
                        for (int q = i; q < i + 8; q++) dst[(long)j * rows + q] = src[(long)q * cols + j];
                }
            for (; i < r1; i++)
            {
                T* row = src + (long)i * cols;
                for (int j = c0; j < c1; j++) dst[(long)j * rows + i] = row[j];
            }
        }
    }

    // The 8×8 byte block at src (row stride srcStride) transposed to dst (row stride dstStride): rows interleaved by bytes, then
    // 16-bit pairs, then 32-bit quads, leaving two output rows per 16-byte vector.
    private static unsafe void Transpose8Bytes(byte* src, int srcStride, byte* dst, int dstStride)
    {
        Vector128<byte> Row(int q) => Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(src + (long)q * srcStride)).AsByte();
        var a0 = Sse2.UnpackLow(Row(0), Row(1)).AsUInt16();
        var a1 = Sse2.UnpackLow(Row(2), Row(3)).AsUInt16();
        var a2 = Sse2.UnpackLow(Row(4), Row(5)).AsUInt16();
        var a3 = Sse2.UnpackLow(Row(6), Row(7)).AsUInt16();
        var b0 = Sse2.UnpackLow(a0, a1).AsUInt32();
        var b1 = Sse2.UnpackHigh(a0, a1).AsUInt32();
        var b2 = Sse2.UnpackLow(a2, a3).AsUInt32();
        var b3 = Sse2.UnpackHigh(a2, a3).AsUInt32();
        void Store(Vector128<uint> c, int col)
        {
            var u = c.AsUInt64();
            Unsafe.WriteUnaligned(dst + (long)col * dstStride, u.GetElement(0));
            Unsafe.WriteUnaligned(dst + (long)(col + 1) * dstStride, u.GetElement(1));
        }
        Store(Sse2.UnpackLow(b0, b2), 0);
        Store(Sse2.UnpackHigh(b0, b2), 2);
        Store(Sse2.UnpackLow(b1, b3), 4);
        Store(Sse2.UnpackHigh(b1, b3), 6);
    }

    /// <summary>Writes the transpose of the 8×8 float block at <paramref name="src"/> (row stride <paramref name="srcStride"/>) to
    /// <paramref name="dst"/> (row stride <paramref name="dstStride"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Transpose8(ref float src, int srcStride, ref float dst, int dstStride)
    {
        var r0 = Vector256.LoadUnsafe(ref src);
        var r1 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, srcStride));
        var r2 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 2 * srcStride));
        var r3 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 3 * srcStride));
        var r4 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 4 * srcStride));
        var r5 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 5 * srcStride));
        var r6 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 6 * srcStride));
        var r7 = Vector256.LoadUnsafe(ref Unsafe.Add(ref src, 7 * srcStride));
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(u0, u4, 0x20).StoreUnsafe(ref dst);
        Avx.Permute2x128(u1, u5, 0x20).StoreUnsafe(ref Unsafe.Add(ref dst, dstStride));
        Avx.Permute2x128(u2, u6, 0x20).StoreUnsafe(ref Unsafe.Add(ref dst, 2 * dstStride));
        Avx.Permute2x128(u3, u7, 0x20).StoreUnsafe(ref Unsafe.Add(ref dst, 3 * dstStride));
        Avx.Permute2x128(u0, u4, 0x31).StoreUnsafe(ref Unsafe.Add(ref dst, 4 * dstStride));
        Avx.Permute2x128(u1, u5, 0x31).StoreUnsafe(ref Unsafe.Add(ref dst, 5 * dstStride));
        Avx.Permute2x128(u2, u6, 0x31).StoreUnsafe(ref Unsafe.Add(ref dst, 6 * dstStride));
        Avx.Permute2x128(u3, u7, 0x31).StoreUnsafe(ref Unsafe.Add(ref dst, 7 * dstStride));
    }
}
