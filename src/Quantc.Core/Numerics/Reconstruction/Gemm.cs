using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Single-precision matrix products for the reconstruction loop (row-major arrays). The kernel is a packed,
/// register-blocked 6×16 micro-kernel on 256-bit FMA (the AVX2 form of the usual BLAS design: B packed in 16-column
/// panels per 256-row K block so its loads are sequential, 12 accumulators, A packed in 96-row blocks of interleaved
/// 6-row micro-panels); large products split their rows
/// over the cores. Without FMA it falls back to a scalar loop.
/// </summary>
public static class Gemm
{
    private const int Nr = 16, Mr = 6, Kc = 256, Mc = 96;

    /// <summary>C[m, n] = A[m, k] · B[k, n] (or C += when <paramref name="accumulate"/>).</summary>
    public static void Nn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)k * n, c.Length, (long)m * n);
        Product(a, b, c, m, k, n, accumulate);
    }

    // The product without size checks: a and b may be longer than m·k and k·n (pooled buffers). Work buffers come from the shared
    // array pool, so the reconstruction loop's steps allocate nothing here.
    private static void Product(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate)
    {
        if (!accumulate) Array.Clear(c);
        if (m == 0 || n == 0 || k == 0) return;
        if (!Fma.IsSupported || !Avx.IsSupported) { Scalar(a, b, c, m, k, n); return; }
        int panels = (n + Nr - 1) / Nr;
        var pack = ArrayPool<float>.Shared.Rent(Math.Min(Kc, k) * panels * Nr);
        // Row ranges per thread, whole multiples of the row block; one task per core, and only for products of 2²⁷ multiply-adds
        // or more: the reconstruction loop's are a few million, where splitting measured slower on a loaded 2-core host.
        int threads = (long)m * n * k >= 1L << 27 ? Math.Min(Environment.ProcessorCount, (m + Mc - 1) / Mc) : 1;
        int rowsPer = (m + threads - 1) / threads;
        rowsPer = (rowsPer + Mr - 1) / Mr * Mr;
        for (int k0 = 0; k0 < k; k0 += Kc)
        {
            int kc = Math.Min(Kc, k - k0);
            PackB(b, pack, k0, kc, n, panels);
            if (threads == 1) Rows(a, pack, c, k, n, 0, m, k0, kc, panels);
            else Parallel.For(0, threads, t => Rows(a, pack, c, k, n, t * rowsPer, Math.Min(m, (t + 1) * rowsPer), k0, kc, panels));
        }
        ArrayPool<float>.Shared.Return(pack);
    }

    /// <summary>C[m, n] = A[m, k] · B[n, k]ᵀ.</summary>
    public static void Nt(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)n * k, c.Length, (long)m * n);
        var bt = ArrayPool<float>.Shared.Rent(k * n);
        Transpose(b, bt, n, k);
        Product(a, bt, c, m, k, n, accumulate);
        ArrayPool<float>.Shared.Return(bt);
    }

    /// <summary>C[m, n] = A[k, m]ᵀ · B[k, n].</summary>
    public static void Tn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)k * m, b.Length, (long)k * n, c.Length, (long)m * n);
        var at = ArrayPool<float>.Shared.Rent(m * k);
        Transpose(a, at, k, m);
        Product(at, b, c, m, k, n, accumulate);
        ArrayPool<float>.Shared.Return(at);
    }

    /// <summary>dst[cols, rows] = src[rows, cols]ᵀ, in 32×32 tiles.</summary>
    public static void Transpose(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols)
    {
        const int T = 32;
        for (int i0 = 0; i0 < rows; i0 += T)
            for (int j0 = 0; j0 < cols; j0 += T)
            {
                int i1 = Math.Min(i0 + T, rows), j1 = Math.Min(j0 + T, cols);
                for (int i = i0; i < i1; i++)
                    for (int j = j0; j < j1; j++) dst[j * rows + i] = src[i * cols + j];
            }
    }

    private static void Check(int a, long wa, int b, long wb, int c, long wc)
    {
        if (a != wa || b != wb || c != wc) throw new ArgumentException($"matrix sizes {a}, {b}, {c} do not match {wa}, {wb}, {wc}");
    }

    private static void Scalar(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
            {
                float x = a[i * k + p];
                if (x == 0) continue;
                for (int j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
            }
    }

    /// <summary>Packs B[k0 .. k0 + kc, :) panel by panel: panel p holds columns [16p, 16p + 16) row after row, zero-padded.</summary>
    private static void PackB(float[] b, float[] pack, int k0, int kc, int n, int panels)
    {
        for (int p = 0; p < panels; p++)
        {
            int j0 = p * Nr, width = Math.Min(Nr, n - j0);
            for (int q = 0; q < kc; q++)
            {
                var dst = pack.AsSpan((p * kc + q) * Nr, Nr);
                b.AsSpan((k0 + q) * n + j0, width).CopyTo(dst);
                if (width < Nr) dst[width..].Clear();
            }
        }
    }

    /// <summary>Rows [r0, r1) of C for one K block: blocks of 96 rows of A (which then stay in L2) against every packed panel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows(float[] a, float[] pack, float[] c, int k, int n, int r0, int r1, int k0, int kc, int panels)
    {
        var apack = ArrayPool<float>.Shared.Rent(Mc * kc);
        for (int i0 = r0; i0 < r1; i0 += Mc)
        {
            int i1 = Math.Min(r1, i0 + Mc), full = (i1 - i0) / Mr * Mr;
            // A's 6-row micro-panels interleaved ([kc][6]): the kernel's broadcasts then read one stream, whatever K's stride.
            for (int b = 0; b < full; b += Mr)
                for (int r = 0; r < Mr; r++)
                {
                    int src = (i0 + b + r) * k + k0, dst = b * kc + r;
                    for (int q = 0; q < kc; q++) apack[dst + q * Mr] = a[src + q];
                }
            for (int p = 0; p < panels; p++)
            {
                int j0 = p * Nr, width = Math.Min(Nr, n - j0), offset = p * kc * Nr;
                for (int b = 0; b < full; b += Mr) Kernel6(apack, b * kc, pack, offset, c, n, i0 + b, j0, kc, width);
                for (int i = i0 + full; i < i1; i++) Kernel1(a, pack, offset, c, k, n, i, j0, k0, kc, width);
            }
        }
        ArrayPool<float>.Shared.Return(apack);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6(float[] apack, int aOffset, float[] pack, int offset, float[] c, int n, int i, int j0, int kc, int width)
    {
        ref float ap = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(apack), aOffset);
        ref float bp = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(pack), offset);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int q = 0; q < kc; q++)
        {
            var b0 = Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr));
            var b1 = Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr + 8));
            ref float aq = ref Unsafe.Add(ref ap, q * Mr);
            var x = Vector256.Create(aq);
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01);
            x = Vector256.Create(Unsafe.Add(ref aq, 1));
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11);
            x = Vector256.Create(Unsafe.Add(ref aq, 2));
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21);
            x = Vector256.Create(Unsafe.Add(ref aq, 3));
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31);
            x = Vector256.Create(Unsafe.Add(ref aq, 4));
            c40 = Fma.MultiplyAdd(x, b0, c40); c41 = Fma.MultiplyAdd(x, b1, c41);
            x = Vector256.Create(Unsafe.Add(ref aq, 5));
            c50 = Fma.MultiplyAdd(x, b0, c50); c51 = Fma.MultiplyAdd(x, b1, c51);
        }
        Store(c, n, i, j0, width, c00, c01);
        Store(c, n, i + 1, j0, width, c10, c11);
        Store(c, n, i + 2, j0, width, c20, c21);
        Store(c, n, i + 3, j0, width, c30, c31);
        Store(c, n, i + 4, j0, width, c40, c41);
        Store(c, n, i + 5, j0, width, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel1(float[] a, float[] pack, int offset, float[] c, int k, int n, int i, int j0, int k0, int kc, int width)
    {
        ref float bp = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(pack), offset);
        Vector256<float> c0 = default, c1 = default;
        for (int q = 0; q < kc; q++)
        {
            var x = Vector256.Create(a[i * k + k0 + q]);
            c0 = Fma.MultiplyAdd(x, Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr)), c0);
            c1 = Fma.MultiplyAdd(x, Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr + 8)), c1);
        }
        Store(c, n, i, j0, width, c0, c1);
    }

    private static void Store(float[] c, int n, int i, int j0, int width, Vector256<float> lo, Vector256<float> hi)
    {
        var dst = c.AsSpan(i * n + j0, width);
        if (width == Nr)
        {
            (Vector256.Create(dst[..8]) + lo).CopyTo(dst[..8]);
            (Vector256.Create(dst[8..]) + hi).CopyTo(dst[8..]);
            return;
        }
        Span<float> tmp = stackalloc float[Nr];
        lo.CopyTo(tmp);
        hi.CopyTo(tmp[8..]);
        for (int j = 0; j < width; j++) dst[j] += tmp[j];
    }
}
