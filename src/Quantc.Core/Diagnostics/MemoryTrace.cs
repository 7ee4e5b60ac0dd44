namespace Quantc.Core.Diagnostics;

/// <summary>
/// With QUANTC_MEMTRACE=1 in the environment, prints the process's memory at named points of a compile to stderr: resident
/// (VmRSS, of it anonymous and file-backed pages), the peak so far (VmHWM) and the managed heap (live, and committed by the
/// GC). A measuring aid for the memory figures in bench/RESULTS.md; silent otherwise. VmHWM says how high the resident set went,
/// not of what: a sampler (every 20 ms while enabled) keeps the highest anonymous and file-backed figures since the previous mark,
/// so a peak inside a library call (ONNX Runtime opening a session) shows whether it was heap or mapped file pages.
/// </summary>
public static class MemoryTrace
{
    /// <summary>True when QUANTC_MEMTRACE is set to 1.</summary>
    public static bool Enabled { get; } = Environment.GetEnvironmentVariable("QUANTC_MEMTRACE") == "1";

    /// <summary>Prints one line for <paramref name="point"/> when enabled.</summary>
    public static void Mark(string point)
    {
        if (!Enabled) return;
        var status = ReadStatus();
        long heap = GC.GetTotalMemory(false);
        long committed = GC.GetGCMemoryInfo().TotalCommittedBytes;
        long anon = Interlocked.Exchange(ref _anonPeakKb, 0), file = Interlocked.Exchange(ref _filePeakKb, 0);
        Console.Error.WriteLine($"memtrace {point,-28} rss {Mb(status, "VmRSS")} (anon {Mb(status, "RssAnon")}, file " +
            $"{Mb(status, "RssFile")}) peak {Mb(status, "VmHWM")} managed {heap >> 20} MiB (committed {committed >> 20} MiB); " +
            $"since the last mark anon ≤ {Math.Max(anon, status.GetValueOrDefault("RssAnon")) >> 10} MiB, file ≤ " +
            $"{Math.Max(file, status.GetValueOrDefault("RssFile")) >> 10} MiB");
    }

    private static long _anonPeakKb, _filePeakKb;

    // Started on first use of the class when enabled; a background thread, so it never keeps the process alive.
    private static readonly Timer? Sampler = Enabled ? new Timer(_ => Sample(), null, 0, 20) : null;

    private static void Sample()
    {
        var status = ReadStatus();
        Raise(ref _anonPeakKb, status.GetValueOrDefault("RssAnon"));
        Raise(ref _filePeakKb, status.GetValueOrDefault("RssFile"));
    }

    private static void Raise(ref long peak, long value)
    {
        long seen;
        while (value > (seen = Volatile.Read(ref peak)) && Interlocked.CompareExchange(ref peak, value, seen) != seen) { }
    }

    /// <summary>The process's peak resident set so far (VmHWM) in bytes; 0 where /proc is not there.</summary>
    public static long PeakRssBytes() => ReadStatus().TryGetValue("VmHWM", out long kb) ? kb << 10 : 0;

    private static Dictionary<string, long> ReadStatus()
    {
        var d = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!File.Exists("/proc/self/status")) return d;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            int colon = line.IndexOf(':');
            if (colon < 0 || !line.EndsWith(" kB", StringComparison.Ordinal)) continue;
            if (long.TryParse(line.AsSpan(colon + 1, line.Length - colon - 4).Trim(), out long kb)) d[line[..colon]] = kb;
        }
        return d;
    }

    private static string Mb(Dictionary<string, long> status, string key) =>
        status.TryGetValue(key, out long kb) ? $"{kb >> 10} MiB" : "?";
}
