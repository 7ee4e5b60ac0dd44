using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Single-precision matrix products for the reconstruction loop (row-major arrays), C (+)= op(A)·op(B) with op a transpose or
/// not. The BLAS design on 256-bit FMA: per 256-deep K block, B is packed in 16-column panels and A in interleaved 6-row
/// micro-panels straight from either layout (no transposed copy), and a 6×16 register-blocked micro-kernel (12 accumulators)
/// computes C's tiles: blocks of 96 rows of A (which stay in L2) against 256-column chunks of B, a 16-column panel staying in
/// L1. Packing and tiles are spread over <see cref="MaxThreads"/> threads.
/// <para>Deterministic whatever the thread count: every element of C is summed by one thread in one fixed order (an FMA chain
/// over each K block from zero, then added to C, K blocks in order), the same order as the single-threaded product.</para>
/// Without FMA it falls back to a scalar loop.
/// </summary>
public static class Gemm
{
    private const int Nr = 16, Mr = 6, Kc = 256, Mc = 96, Nc = 256;
    // Products of fewer multiply-adds run on one thread: below this the hand-off costs more than it gives.
    private const long ParallelMultiplyAdds = 1L << 22;
    private static long s_ticks, s_multiplyAdds;
    private static int s_threads = Environment.ProcessorCount;

    /// <summary>Threads the products (and the reconstruction loop's element-wise work) may use; results do not depend on it.</summary>
    public static int MaxThreads
    {
        get => s_threads;
        set => s_threads = Math.Max(1, value);
    }

    /// <summary>Seconds spent in products and their multiply-adds, over the process (for throughput figures).</summary>
    public static (double Seconds, long MultiplyAdds) Counters =>
        (Interlocked.Read(ref s_ticks) / (double)Stopwatch.Frequency, Interlocked.Read(ref s_multiplyAdds));

    /// <summary>C[m, n] = A[m, k] · B[k, n] (or C += when <paramref name="accumulate"/>).</summary>
    public static void Nn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)k * n, c.Length, (long)m * n);
        Product(a, 0, false, b, 0, false, c, 0, m, k, n, accumulate);
    }

    /// <summary>C[m, n] = A[m, k] · B[n, k]ᵀ.</summary>
    public static void Nt(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)n * k, c.Length, (long)m * n);
        Product(a, 0, false, b, 0, true, c, 0, m, k, n, accumulate);
    }

    /// <summary>C[m, n] = A[k, m]ᵀ · B[k, n].</summary>
    public static void Tn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)k * m, b.Length, (long)k * n, c.Length, (long)m * n);
        Product(a, 0, true, b, 0, false, c, 0, m, k, n, accumulate);
    }

    /// <summary>C[m, n] = A[m, k] · B[k, n] with A the m·k values of <paramref name="a"/> from <paramref name="aOffset"/> (rows of a
    /// larger matrix) and C the first m·n of <paramref name="c"/>; each element is the sum <see cref="Nn"/> of the whole gives.</summary>
    public static void NnRows(float[] a, int aOffset, float[] b, float[] c, int m, int k, int n) =>
        Slices(a, aOffset, false, b, 0, false, c, 0, m, k, n, false);

    /// <summary>C (+)= op(A)·op(B) on parts of larger arrays: A's m·k values from <paramref name="aOffset"/> ([k, m] when
    /// <paramref name="at"/>, else [m, k]), B's k·n from <paramref name="bOffset"/> ([n, k] when <paramref name="bt"/>), C's m·n from
    /// <paramref name="cOffset"/>; the same sums as <see cref="Nn"/>, <see cref="Nt"/>, <see cref="Tn"/>.</summary>
    public static void Slices(float[] a, int aOffset, bool at, float[] b, int bOffset, bool bt, float[] c, int cOffset, int m, int k,
        int n, bool accumulate)
    {
        if (aOffset < 0 || aOffset + (long)m * k > a.Length || bOffset < 0 || bOffset + (long)k * n > b.Length || cOffset < 0
            || cOffset + (long)m * n > c.Length)
            throw new ArgumentException($"matrix sizes {a.Length} from {aOffset}, {b.Length} from {bOffset}, {c.Length} from " +
                $"{cOffset} do not fit {m} × {k} × {n}");
        Product(a, aOffset, at, b, bOffset, bt, c, cOffset, m, k, n, accumulate);
    }

    /// <summary>Runs <paramref name="body"/>(i) for i in [0, <paramref name="count"/>) on up to <see cref="MaxThreads"/> threads
    /// (inline when one thread or one item).</summary>
    public static void For(int count, Action<int> body)
    {
        int threads = Math.Min(MaxThreads, count);
        if (threads <= 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, body);
    }

    /// <summary>dst[cols, rows] = src[rows, cols]ᵀ (<see cref="Transposition.Floats"/>).</summary>
    public static void Transpose(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols) =>
        Transposition.Floats(src, dst, rows, cols);

    private static void Check(int a, long wa, int b, long wb, int c, long wc)
    {
        if (a != wa || b != wb || c != wc) throw new ArgumentException($"matrix sizes {a}, {b}, {c} do not match {wa}, {wb}, {wc}");
    }

    /// <summary>The product with A (from <paramref name="aOffset"/>) read as [k, m] when <paramref name="at"/> and B as [n, k] when
    /// <paramref name="bt"/>. Work buffers come from the shared array pool, so the reconstruction loop's steps allocate no
    /// buffers here.</summary>
    private static void Product(float[] a, int aOffset, bool at, float[] b, int bOffset, bool bt, float[] c, int cOffset, int m, int k,
        int n, bool accumulate)
    {
        long start = Stopwatch.GetTimestamp();
        if (m == 0 || n == 0) return;
        if (k == 0 || !Fma.IsSupported || !Avx.IsSupported)
        {
            if (!accumulate) Array.Clear(c, cOffset, m * n);
            Scalar(a, aOffset, at, b, bOffset, bt, c, cOffset, m, k, n);
            return;
        }
        int panels = (n + Nr - 1) / Nr, micro = (m + Mr - 1) / Mr, kcMax = Math.Min(Kc, k);
        var bpack = ArrayPool<float>.Shared.Rent(kcMax * panels * Nr);
        var apack = ArrayPool<float>.Shared.Rent(kcMax * micro * Mr);
        bool parallel = MaxThreads > 1 && (long)m * n * k >= ParallelMultiplyAdds;
        int rowBlocks = (m + Mc - 1) / Mc, colChunks = (n + Nc - 1) / Nc, tiles = rowBlocks * colChunks;
        int packB = Math.Min(panels, 64), packA = Math.Min(micro, 64);
        for (int k0 = 0; k0 < k; k0 += Kc)
        {
            int kc = Math.Min(Kc, k - k0);
            bool load = accumulate || k0 > 0;
            // Packing: panels of B and micro-panels of A in chunks, each chunk by one thread.
            Run(parallel, packB + packA, job =>
            {
                if (job < packB)
                    for (int p = job * panels / packB; p < (job + 1) * panels / packB; p++)
                        PackBPanel(b, bOffset, bt, bpack, p, k0, kc, k, n);
                else
                {
                    int j = job - packB;
                    for (int r = j * micro / packA; r < (j + 1) * micro / packA; r++)
                        PackAPanel(a, aOffset, at, apack, r, k0, kc, k, m);
                }
            });
            Run(parallel, tiles, tile =>
            {
                int rb = tile / colChunks, cb = tile % colChunks;
                int r0 = rb * (Mc / Mr), r1 = Math.Min(micro, r0 + Mc / Mr);
                int p0 = cb * (Nc / Nr), p1 = Math.Min(panels, p0 + Nc / Nr);
                Span<float> tile6 = stackalloc float[Mr * Nr];
                ref float acc = ref MemoryMarshal.GetReference(tile6);
                ref float a0 = ref MemoryMarshal.GetArrayDataReference(apack);
                ref float b0 = ref MemoryMarshal.GetArrayDataReference(bpack);
                for (int p = p0; p < p1; p++)
                {
                    int j0 = p * Nr, width = Math.Min(Nr, n - j0);
                    for (int r = r0; r < r1; r++)
                    {
                        Kernel(ref Unsafe.Add(ref a0, r * kc * Mr), ref Unsafe.Add(ref b0, p * kc * Nr), kc, ref acc);
                        AddTile(ref acc, c, cOffset, n, r * Mr, Math.Min(Mr, m - r * Mr), j0, width, load);
                    }
                }
            });
        }
        ArrayPool<float>.Shared.Return(bpack);
        ArrayPool<float>.Shared.Return(apack);
        Interlocked.Add(ref s_ticks, Stopwatch.GetTimestamp() - start);
        Interlocked.Add(ref s_multiplyAdds, (long)m * k * n);
    }

    private static void Run(bool parallel, int count, Action<int> body)
    {
        if (parallel) For(count, body);
        else for (int i = 0; i < count; i++) body(i);
    }

    private static void Scalar(float[] a, int aOffset, bool at, float[] b, int bOffset, bool bt, float[] c, int cOffset, int m, int k,
        int n)
    {
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
            {
                float x = a[aOffset + (at ? p * m + i : i * k + p)];
                if (x == 0) continue;
                for (int j = 0; j < n; j++) c[cOffset + i * n + j] += x * b[bOffset + (bt ? j * k + p : p * n + j)];
            }
    }

    /// <summary>Packs columns [16p, 16p + 16) of B's rows [k0, k0 + kc) as panel p: row after row, 16 values each, zero-padded.</summary>
    private static void PackBPanel(float[] b, int bOffset, bool bt, float[] pack, int p, int k0, int kc, int k, int n)
    {
        int j0 = p * Nr, width = Math.Min(Nr, n - j0);
        ref float dst = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(pack), p * kc * Nr);
        ref float src = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(b), bOffset);
        if (!bt)
        {
            for (int q = 0; q < kc; q++)
            {
                ref float row = ref Unsafe.Add(ref src, (k0 + q) * n + j0);
                ref float to = ref Unsafe.Add(ref dst, q * Nr);
                if (width == Nr)
                {
                    Vector256.LoadUnsafe(ref row).StoreUnsafe(ref to);
                    Vector256.LoadUnsafe(ref row, 8).StoreUnsafe(ref to, 8);
                }
                else
                    for (int j = 0; j < Nr; j++) Unsafe.Add(ref to, j) = j < width ? Unsafe.Add(ref row, j) : 0f;
            }
            return;
        }
        // B stored [n, k]: column j of op(B) is row j of b, contiguous in q; 8×8 blocks are transposed in registers.
        int q8 = Avx.IsSupported && width == Nr ? kc / 8 * 8 : 0;
        for (int half = 0; half < Nr && q8 > 0; half += 8)
        {
            ref float rows = ref Unsafe.Add(ref src, (j0 + half) * k + k0);
            for (int q = 0; q < q8; q += 8)
                Transposition.Transpose8(ref Unsafe.Add(ref rows, q), k, ref Unsafe.Add(ref dst, q * Nr + half), Nr);
        }
        for (int j = 0; j < Nr; j++)
        {
            if (j >= width)
            {
                for (int q = 0; q < kc; q++) Unsafe.Add(ref dst, q * Nr + j) = 0f;
                continue;
            }
            ref float col = ref Unsafe.Add(ref src, (j0 + j) * k + k0);
            for (int q = q8; q < kc; q++) Unsafe.Add(ref dst, q * Nr + j) = Unsafe.Add(ref col, q);
        }
    }

    /// <summary>Packs rows [6r, 6r + 6) of A's columns [k0, k0 + kc) as micro-panel r: [kc][6] interleaved, zero-padded rows.</summary>
    private static void PackAPanel(float[] a, int aOffset, bool at, float[] pack, int r, int k0, int kc, int k, int m)
    {
        int i0 = r * Mr, rows = Math.Min(Mr, m - i0);
        ref float dst = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(pack), r * kc * Mr);
        ref float src = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(a), aOffset);
        if (at)
        {
            // A stored [k, m]: the six values of a column q are contiguous.
            for (int q = 0; q < kc; q++)
            {
                ref float from = ref Unsafe.Add(ref src, (k0 + q) * m + i0);
                ref float to = ref Unsafe.Add(ref dst, q * Mr);
                for (int i = 0; i < Mr; i++) Unsafe.Add(ref to, i) = i < rows ? Unsafe.Add(ref from, i) : 0f;
            }
            return;
        }
        for (int i = 0; i < Mr; i++)
        {
            if (i >= rows)
            {
                for (int q = 0; q < kc; q++) Unsafe.Add(ref dst, q * Mr + i) = 0f;
                continue;
            }
            ref float row = ref Unsafe.Add(ref src, (i0 + i) * k + k0);
            for (int q = 0; q < kc; q++) Unsafe.Add(ref dst, q * Mr + i) = Unsafe.Add(ref row, q);
        }
    }

    /// <summary>The 6×16 tile of the packed micro-panel <paramref name="ap"/> and panel <paramref name="bp"/> over kc, into
    /// <paramref name="acc"/> [6][16]. The accumulators leave the registers only once, after the loop, by plain stores (a call or a
    /// branch on them there makes the JIT spill them on every iteration).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void Kernel(ref float ap, ref float bp, int kc, ref float acc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int q = 0; q < kc; q++)
        {
            var b0 = Vector256.LoadUnsafe(ref bp);
            var b1 = Vector256.LoadUnsafe(ref bp, 8);
            var x = Vector256.Create(ap);
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01);
            x = Vector256.Create(Unsafe.Add(ref ap, 1));
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11);
            x = Vector256.Create(Unsafe.Add(ref ap, 2));
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21);
            x = Vector256.Create(Unsafe.Add(ref ap, 3));
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31);
            x = Vector256.Create(Unsafe.Add(ref ap, 4));
            c40 = Fma.MultiplyAdd(x, b0, c40); c41 = Fma.MultiplyAdd(x, b1, c41);
            x = Vector256.Create(Unsafe.Add(ref ap, 5));
            c50 = Fma.MultiplyAdd(x, b0, c50); c51 = Fma.MultiplyAdd(x, b1, c51);
            ap = ref Unsafe.Add(ref ap, Mr);
            bp = ref Unsafe.Add(ref bp, Nr);
        }
        c00.StoreUnsafe(ref acc, 0); c01.StoreUnsafe(ref acc, 8);
        c10.StoreUnsafe(ref acc, 16); c11.StoreUnsafe(ref acc, 24);
        c20.StoreUnsafe(ref acc, 32); c21.StoreUnsafe(ref acc, 40);
        c30.StoreUnsafe(ref acc, 48); c31.StoreUnsafe(ref acc, 56);
        c40.StoreUnsafe(ref acc, 64); c41.StoreUnsafe(ref acc, 72);
        c50.StoreUnsafe(ref acc, 80); c51.StoreUnsafe(ref acc, 88);
    }

    /// <summary>C[i .. i + rows, j0 .. j0 + width) += acc, or = acc + 0 on the first K block of a non-accumulating product (the same
    /// bits as clearing C first: −0 + 0 = +0).</summary>
    private static void AddTile(ref float acc, float[] c, int cOffset, int n, int i, int rows, int j0, int width, bool load)
    {
        ref float c0 = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(c), cOffset);
        for (int r = 0; r < rows; r++)
        {
            ref float dst = ref Unsafe.Add(ref c0, (i + r) * n + j0);
            ref float src = ref Unsafe.Add(ref acc, r * Nr);
            if (width == Nr)
            {
                var l = load ? Vector256.LoadUnsafe(ref dst) : Vector256<float>.Zero;
                var h = load ? Vector256.LoadUnsafe(ref dst, 8) : Vector256<float>.Zero;
                (l + Vector256.LoadUnsafe(ref src)).StoreUnsafe(ref dst);
                (h + Vector256.LoadUnsafe(ref src, 8)).StoreUnsafe(ref dst, 8);
                continue;
            }
            for (int j = 0; j < width; j++) Unsafe.Add(ref dst, j) = (load ? Unsafe.Add(ref dst, j) : 0f) + Unsafe.Add(ref src, j);
        }
    }
}
