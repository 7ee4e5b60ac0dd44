using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

/// <summary>The measured fp32 FMA peak: 12 independent FMA chains on 256-bit registers (no memory traffic), single-threaded and on
/// every core, the best of 5 runs (a shared host only ever lowers it). 512-bit vectors measured within the noise of these on this
/// AMD host.</summary>
internal static class Peak
{
    public static (double One, double All) Measure() => (Best(1), Best(Environment.ProcessorCount));

    private static double Best(int threads)
    {
        const long iterations = 20_000_000;
        Chains256(100_000);
        double best = 0;
        for (int run = 0; run < 5; run++)
        {
            var sw = Stopwatch.StartNew();
            double sink = 0;
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ =>
            {
                double s = Chains256(iterations);
                lock (sw) sink += s;
            });
            const double flops = 2.0 * 8 * 12;
            best = Math.Max(best, flops * iterations * threads / sw.Elapsed.TotalSeconds / 1e9);
            if (sink == 1234.5) Console.Write("");
        }
        return best;
    }

    // 12 independent accumulators: more than FMA latency (4) × ports (2), so the FMA units never wait.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static double Chains256(long n)
    {
        var m = Vector256.Create(0.999999f);
        var b = Vector256.Create(1e-7f);
        Vector256<float> c0 = m, c1 = m, c2 = m, c3 = m, c4 = m, c5 = m, c6 = m, c7 = m, c8 = m, c9 = m, c10 = m, c11 = m;
        for (long i = 0; i < n; i++)
        {
            c0 = Fma.MultiplyAdd(c0, m, b); c1 = Fma.MultiplyAdd(c1, m, b); c2 = Fma.MultiplyAdd(c2, m, b);
            c3 = Fma.MultiplyAdd(c3, m, b); c4 = Fma.MultiplyAdd(c4, m, b); c5 = Fma.MultiplyAdd(c5, m, b);
            c6 = Fma.MultiplyAdd(c6, m, b); c7 = Fma.MultiplyAdd(c7, m, b); c8 = Fma.MultiplyAdd(c8, m, b);
            c9 = Fma.MultiplyAdd(c9, m, b); c10 = Fma.MultiplyAdd(c10, m, b); c11 = Fma.MultiplyAdd(c11, m, b);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}
