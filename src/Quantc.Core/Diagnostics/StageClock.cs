using System.Diagnostics;

namespace Quantc.Core.Diagnostics;

/// <summary>
/// One stage of a compile: its name, wall time, the process's CPU time over it (all threads; on a loaded machine the wall time
/// says little, the CPU time what the stage itself cost), and the process's peak resident set (VmHWM) when it ended.
/// </summary>
public sealed record StageTime(string Stage, TimeSpan Elapsed, long PeakRssBytes, TimeSpan Cpu = default);

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
        var cpu = Environment.CpuUsage.TotalTime;
        try { return work(); }
        finally { Record(stage, Stopwatch.GetElapsedTime(started), Environment.CpuUsage.TotalTime - cpu); }
    }

    /// <summary>Runs <paramref name="work"/> as stage <paramref name="stage"/>.</summary>
    public void Time(string stage, Action work) => Time(stage, () => { work(); return 0; });

    /// <summary>Records stage <paramref name="stage"/>, timed by the caller (its CPU time unknown: zero).</summary>
    public void Add(string stage, TimeSpan elapsed) => Record(stage, elapsed, TimeSpan.Zero);

    private void Record(string stage, TimeSpan elapsed, TimeSpan cpu) =>
        _stages.Add(new StageTime(stage, elapsed, MemoryTrace.PeakRssBytes(), cpu));

    /// <summary>The summed CPU time of the stages named <paramref name="stage"/> (zero when none).</summary>
    public TimeSpan CpuOf(string stage) =>
        TimeSpan.FromTicks(_stages.Where(s => s.Stage == stage).Sum(s => s.Cpu.Ticks));

    /// <summary>The summed time of the stages named <paramref name="stage"/> (zero when none).</summary>
    public TimeSpan Of(string stage) =>
        TimeSpan.FromTicks(_stages.Where(s => s.Stage == stage).Sum(s => s.Elapsed.Ticks));
}
