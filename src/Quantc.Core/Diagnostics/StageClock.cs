using System.Diagnostics;

namespace Quantc.Core.Diagnostics;

/// <summary>One stage of a compile: its name, wall time, and the process's peak resident set (VmHWM) when it ended.</summary>
public sealed record StageTime(string Stage, TimeSpan Elapsed, long PeakRssBytes);

/// <summary>
/// Times the stages of a compile (read, calibration data, import, passes, write, ONNX Runtime load check, verify) and notes the
/// peak resident set after each: one Stopwatch reading and one read of /proc/self/status per stage, so it is always on.
/// <c>quantc compile</c> prints the stages in one line after the passes (bench/RESULTS.md, "Compile speed").
/// </summary>
public sealed class StageClock
{
    private readonly List<StageTime> _stages = [];

    /// <summary>The stages timed so far, in order.</summary>
    public IReadOnlyList<StageTime> Stages => _stages;

    /// <summary>Runs <paramref name="work"/> as stage <paramref name="stage"/>.</summary>
    public T Time<T>(string stage, Func<T> work)
    {
        long started = Stopwatch.GetTimestamp();
        try { return work(); }
        finally { Add(stage, Stopwatch.GetElapsedTime(started)); }
    }

    /// <summary>Runs <paramref name="work"/> as stage <paramref name="stage"/>.</summary>
    public void Time(string stage, Action work) => Time(stage, () => { work(); return 0; });

    /// <summary>Records stage <paramref name="stage"/>, timed by the caller.</summary>
    public void Add(string stage, TimeSpan elapsed) => _stages.Add(new StageTime(stage, elapsed, MemoryTrace.PeakRssBytes()));

    /// <summary>The summed time of the stages named <paramref name="stage"/> (zero when none).</summary>
    public TimeSpan Of(string stage) =>
        TimeSpan.FromTicks(_stages.Where(s => s.Stage == stage).Sum(s => s.Elapsed.Ticks));
}
