namespace Quantc.Models;

/// <summary>
/// A counter-based random stream: element <c>i</c> of a stream is a pure function of the
/// stream's key and <c>i</c> (SplitMix64's finaliser over key + i·γ), so any slice of a
/// tensor can be generated on its own, in any order, in parallel, and always gives the same
/// bits. Normals use Box–Muller with <see cref="DetMath"/> (plain IEEE arithmetic, no libm),
/// so the values are identical on every machine and runtime.
/// </summary>
public readonly struct RandomStream
{
    private const ulong Gamma = 0x9E3779B97F4A7C15UL;

    /// <summary>The stream's key.</summary>
    public ulong Key { get; }

    public RandomStream(ulong key) => Key = key;

    /// <summary>A stream keyed by a seed and a name (e.g. the tensor's name): independent streams per tensor.</summary>
    public static RandomStream For(long seed, string name) => new(Mix(unchecked((ulong)seed * 0xD1B54A32D192ED03UL) ^ Fnv1a(name)));

    /// <summary>A derived stream (e.g. one per purpose within a tensor).</summary>
    public RandomStream Derive(string name) => new(Mix(Key ^ Fnv1a(name)));

    /// <summary>SplitMix64's output function.</summary>
    public static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    /// <summary>64-bit FNV-1a of the UTF-16 code units of <paramref name="s"/>.</summary>
    public static ulong Fnv1a(string s)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in s) { h ^= c; h = unchecked(h * 0x100000001B3UL); }
        return h;
    }

    /// <summary>The 64 random bits at position <paramref name="i"/>.</summary>
    public ulong Bits(long i) => Mix(unchecked(Key + (ulong)(i + 1) * Gamma));

    /// <summary>A uniform double in (0, 1) at position <paramref name="i"/>.</summary>
    public double Uniform(long i) => ((Bits(i) >> 11) + 0.5) * (1.0 / (1UL << 53));

    /// <summary>An integer in [0, <paramref name="n"/>) at position <paramref name="i"/>.</summary>
    public int NextInt(long i, int n) => (int)((Bits(i) >> 33) % (ulong)n);

    /// <summary>The standard normal at position <paramref name="i"/> (pairs share one Box–Muller draw).</summary>
    public double Normal(long i)
    {
        long pair = i >> 1;
        double u1 = Uniform(2 * pair), u2 = Uniform(2 * pair + 1);
        double r = Math.Sqrt(-2.0 * DetMath.Log(u1));
        DetMath.SinCos(2.0 * Math.PI * u2, out double s, out double c);
        return (i & 1) == 0 ? r * c : r * s;
    }

    /// <summary>Fills <paramref name="dst"/> with normals at positions <paramref name="start"/>… scaled by <paramref
    /// name="std"/>.</summary>
    public void FillNormal(long start, Span<float> dst, double std)
    {
        int k = 0;
        long i = start;
        if ((i & 1) == 1 && dst.Length > 0) { dst[k++] = (float)(Normal(i++) * std); }
        for (; k + 1 < dst.Length; k += 2, i += 2)
        {
            long pair = i >> 1;
            double u1 = Uniform(2 * pair), u2 = Uniform(2 * pair + 1);
            double r = Math.Sqrt(-2.0 * DetMath.Log(u1)) * std;
            DetMath.SinCos(2.0 * Math.PI * u2, out double s, out double c);
            dst[k] = (float)(r * c);
            dst[k + 1] = (float)(r * s);
        }
        if (k < dst.Length) dst[k] = (float)(Normal(i) * std);
    }
}

/// <summary>
/// Elementary functions written with IEEE-754 basic operations only (+ − × ÷ and sqrt, all
/// correctly rounded), so that results do not depend on the platform's libm. Accurate to a few
/// ulps of double, which is far below the float32 the models store.
/// </summary>
public static class DetMath
{
    private const double Ln2Hi = 6.93147180369123816490e-01, Ln2Lo = 1.90821492927058770002e-10;

    /// <summary>Natural logarithm for x &gt; 0.</summary>
    public static double Log(double x)
    {
        if (!(x > 0)) return x == 0 ? double.NegativeInfinity : double.NaN;
        if (double.IsPositiveInfinity(x)) return x;
        long bits = BitConverter.DoubleToInt64Bits(x);
        int e = (int)((bits >> 52) & 0x7FF);
        if (e == 0) { x *= 18014398509481984.0; bits = BitConverter.DoubleToInt64Bits(x); e = (int)((bits >> 52) & 0x7FF) - 54; }
        int k = e - 1023;
        double m = BitConverter.Int64BitsToDouble((bits & 0x000FFFFFFFFFFFFFL) | 0x3FF0000000000000L); // [1, 2)
        if (m > 1.4142135623730951) { m *= 0.5; k++; }
        // log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.1716
        double f = m - 1.0, s = f / (2.0 + f), s2 = s * s;
        double sum = 0, term = s;
        for (int n = 1; n < 40; n += 2)
        {
            double add = term / n;
            sum += add;
            if (Math.Abs(add) < 1e-18 * Math.Abs(sum)) break;
            term *= s2;
        }
        return k * Ln2Hi + (2.0 * sum + k * Ln2Lo);
    }

    /// <summary>e^x.</summary>
    public static double Exp(double x)
    {
        if (double.IsNaN(x)) return x;
        if (x > 709.7) return double.PositiveInfinity;
        if (x < -745) return 0;
        double kf = Math.Round(x / 0.69314718055994530942);
        int k = (int)kf;
        double r = (x - kf * Ln2Hi) - kf * Ln2Lo;     // |r| <= ln2/2
        double sum = 1, term = 1;
        for (int n = 1; n < 30; n++)
        {
            term *= r / n;
            sum += term;
            if (Math.Abs(term) < 1e-18) break;
        }
        return Math.ScaleB(sum, k);
    }

    /// <summary>x^y for x &gt; 0.</summary>
    public static double Pow(double x, double y) => Exp(y * Log(x));

    /// <summary>sin and cos of x (accurate for |x| up to about 1e6).</summary>
    public static void SinCos(double x, out double sin, out double cos)
    {
        // Cody–Waite reduction by π/2 with a three-part constant.
        const double PioTwo1 = 1.57079632673412561417e+00, PioTwo2 = 6.07710050650619224932e-11, PioTwo3 = 2.02226624879595063154e-21;
        double kf = Math.Round(x * 0.63661977236758134308);
        double r = ((x - kf * PioTwo1) - kf * PioTwo2) - kf * PioTwo3;
        int q = (int)((long)kf & 3);
        double r2 = r * r;
        double s = r, c = 1, ts = r, tc = 1;
        for (int n = 1; n < 14; n++)
        {
            ts *= -r2 / ((2 * n) * (2 * n + 1));
            tc *= -r2 / ((2 * n - 1) * (2 * n));
            s += ts;
            c += tc;
        }
        switch (q)
        {
            case 0: sin = s; cos = c; break;
            case 1: sin = c; cos = -s; break;
            case 2: sin = -s; cos = -c; break;
            default: sin = -c; cos = s; break;
        }
    }
}
