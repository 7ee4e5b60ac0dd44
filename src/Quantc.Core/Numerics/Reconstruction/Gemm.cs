using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Single-precision matrix products for the reconstruction loop (row-major spans). The kernel is a packed, register-blocked
/// 6×16 micro-kernel on 256-bit FMA (the AVX2 form of the usual BLAS design: B packed per 16-column panel and 256-row block
/// so its loads are sequential, 12 accumulators); panels run in parallel. Without FMA it falls back to a scalar loop.
/// </summary>
public static class Gemm
{
    private const int Nr = 16, Mr = 6, Kc = 256;

    /// <summary>C[m, n] = A[m, k] · B[k, n] (or C += when <paramref name="accumulate"/>).</summary>
    public static void Nn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)k * n, c.Length, (long)m * n);
        if (!accumulate) Array.Clear(c);
        if (m == 0 || n == 0 || k == 0) return;
        if (!Fma.IsSupported || !Avx.IsSupported) { Scalar(a, b, c, m, k, n); return; }
        int panels = (n + Nr - 1) / Nr;
        long work = (long)m * n * k;
        if (work < 1 << 18 || panels == 1) for (int p = 0; p < panels; p++) Panel(a, b, c, m, k, n, p, new float[Kc * Nr]);
        else Parallel.For(0, panels, () => new float[Kc * Nr], (p, _, pack) => { Panel(a, b, c, m, k, n, p, pack); return pack; },
            _ => { });
    }

    /// <summary>C[m, n] = A[m, k] · B[n, k]ᵀ.</summary>
    public static void Nt(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)m * k, b.Length, (long)n * k, c.Length, (long)m * n);
        var bt = new float[(long)k * n];
        Transpose(b, bt, n, k);
        Nn(a, bt, c, m, k, n, accumulate);
    }

    /// <summary>C[m, n] = A[k, m]ᵀ · B[k, n].</summary>
    public static void Tn(float[] a, float[] b, float[] c, int m, int k, int n, bool accumulate = false)
    {
        Check(a.Length, (long)k * m, b.Length, (long)k * n, c.Length, (long)m * n);
        var at = new float[(long)m * k];
        Transpose(a, at, k, m);
        Nn(at, b, c, m, k, n, accumulate);
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

    /// <summary>Columns [16p, 16p + 16) of C, over every row block and K block.</summary>
    private static void Panel(float[] a, float[] b, float[] c, int m, int k, int n, int p, float[] pack)
    {
        int j0 = p * Nr, width = Math.Min(Nr, n - j0);
        for (int k0 = 0; k0 < k; k0 += Kc)
        {
            int kc = Math.Min(Kc, k - k0);
            // Pack B[k0 .. k0 + kc, j0 .. j0 + 16) contiguous, zero-padded to 16 columns.
            for (int q = 0; q < kc; q++)
            {
                var row = b.AsSpan((k0 + q) * n + j0, width);
                var dst = pack.AsSpan(q * Nr, Nr);
                row.CopyTo(dst);
                if (width < Nr) dst[width..].Clear();
            }
            int i = 0;
            for (; i + Mr <= m; i += Mr) Kernel6(a, pack, c, k, n, i, j0, k0, kc, width);
            for (; i < m; i++) Kernel1(a, pack, c, k, n, i, j0, k0, kc, width);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6(float[] a, float[] pack, float[] c, int k, int n, int i, int j0, int k0, int kc, int width)
    {
        ref float ap = ref MemoryMarshal.GetArrayDataReference(a);
        ref float bp = ref MemoryMarshal.GetArrayDataReference(pack);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        nint r0 = (nint)i * k + k0, r1 = r0 + k, r2 = r1 + k, r3 = r2 + k, r4 = r3 + k, r5 = r4 + k;
        for (int q = 0; q < kc; q++)
        {
            var b0 = Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr));
            var b1 = Vector256.LoadUnsafe(ref bp, (nuint)(q * Nr + 8));
            var x = Vector256.Create(Unsafe.Add(ref ap, r0 + q));
            c00 = Fma.MultiplyAdd(x, b0, c00); c01 = Fma.MultiplyAdd(x, b1, c01);
            x = Vector256.Create(Unsafe.Add(ref ap, r1 + q));
            c10 = Fma.MultiplyAdd(x, b0, c10); c11 = Fma.MultiplyAdd(x, b1, c11);
            x = Vector256.Create(Unsafe.Add(ref ap, r2 + q));
            c20 = Fma.MultiplyAdd(x, b0, c20); c21 = Fma.MultiplyAdd(x, b1, c21);
            x = Vector256.Create(Unsafe.Add(ref ap, r3 + q));
            c30 = Fma.MultiplyAdd(x, b0, c30); c31 = Fma.MultiplyAdd(x, b1, c31);
            x = Vector256.Create(Unsafe.Add(ref ap, r4 + q));
            c40 = Fma.MultiplyAdd(x, b0, c40); c41 = Fma.MultiplyAdd(x, b1, c41);
            x = Vector256.Create(Unsafe.Add(ref ap, r5 + q));
            c50 = Fma.MultiplyAdd(x, b0, c50); c51 = Fma.MultiplyAdd(x, b1, c51);
        }
        Store(c, n, i, j0, width, c00, c01);
        Store(c, n, i + 1, j0, width, c10, c11);
        Store(c, n, i + 2, j0, width, c20, c21);
        Store(c, n, i + 3, j0, width, c30, c31);
        Store(c, n, i + 4, j0, width, c40, c41);
        Store(c, n, i + 5, j0, width, c50, c51);
    }

    private static void Kernel1(float[] a, float[] pack, float[] c, int k, int n, int i, int j0, int k0, int kc, int width)
    {
        ref float bp = ref MemoryMarshal.GetArrayDataReference(pack);
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
