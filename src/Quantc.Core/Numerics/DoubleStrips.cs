using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantc.Core.Numerics;

/// <summary>
/// Register-held strips of <see cref="Width"/> float64 sums for GPTQ's Hessian, factor and error updates. A strip is
/// acc[c] ← acc[c] ± coef[t]·x[t, col + c] for a run of terms t, taken in the order given: each element gets the same
/// operations in the same order as the axpy loops they replace (the product rounded, then the sum; no fused multiply-add), so
/// the results are bit-identical, but the sums stay in registers while the terms stream by instead of being loaded and
/// stored once per term.
/// </summary>
internal static class DoubleStrips
{
    /// <summary>Elements per strip: four 256-bit vectors.</summary>
    public const int Width = 16;

    /// <summary>acc[c] ← acc[c] + coef[t]·x[t·stride + col + c] (or − with <typeparamref name="TOp"/> = <see cref="Sub"/>), t ascending
    /// in [t0, t1), c &lt; acc.Length ≤ <see cref="Width"/>.</summary>
    public static void Range<TOp>(Span<double> acc, ReadOnlySpan<double> coef, int t0, int t1, double[] x, int col, int stride)
        where TOp : struct, IOp
    {
        if (acc.Length == Width && Vector256.IsHardwareAccelerated)
        {
            ref double a = ref MemoryMarshal.GetReference(acc);
            var s0 = Vector256.LoadUnsafe(ref a);
            var s1 = Vector256.LoadUnsafe(ref a, 4);
            var s2 = Vector256.LoadUnsafe(ref a, 8);
            var s3 = Vector256.LoadUnsafe(ref a, 12);
            if (t1 > t0)
            {
                // The last element a term reads must lie in x (a row of the strip is read whole).
                if ((long)(t1 - 1) * stride + col + Width > x.Length) throw new ArgumentOutOfRangeException(nameof(x));
                ref double xr = ref MemoryMarshal.GetArrayDataReference(x);
                for (int t = t0; t < t1; t++)
                {
                    var c = Vector256.Create(coef[t]);
                    nuint o = (nuint)((long)t * stride + col);
                    s0 = TOp.Apply(s0, c * Vector256.LoadUnsafe(ref xr, o));
                    s1 = TOp.Apply(s1, c * Vector256.LoadUnsafe(ref xr, o + 4));
                    s2 = TOp.Apply(s2, c * Vector256.LoadUnsafe(ref xr, o + 8));
                    s3 = TOp.Apply(s3, c * Vector256.LoadUnsafe(ref xr, o + 12));
                }
            }
            s0.StoreUnsafe(ref a);
            s1.StoreUnsafe(ref a, 4);
            s2.StoreUnsafe(ref a, 8);
            s3.StoreUnsafe(ref a, 12);
            return;
        }
        for (int t = t0; t < t1; t++)
        {
            double c = coef[t];
            var row = x.AsSpan((int)((long)t * stride + col), acc.Length);
            for (int j = 0; j < acc.Length; j++) acc[j] = TOp.Apply(acc[j], c * row[j]);
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
