namespace Quantc.Core.Diagnostics;

/// <summary>
/// With QUANTC_MEMTRACE=1 in the environment, prints the process's memory at named points of a compile to stderr: resident
/// (VmRSS, of it anonymous and file-backed pages), the peak so far (VmHWM) and the managed heap (live, and committed by the
/// GC). A measuring aid for the memory figures in bench/RESULTS.md; silent otherwise.
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
        Console.Error.WriteLine($"memtrace {point,-28} rss {Mb(status, "VmRSS")} (anon {Mb(status, "RssAnon")}, file " +
            $"{Mb(status, "RssFile")}) peak {Mb(status, "VmHWM")} managed {heap >> 20} MiB (committed {committed >> 20} MiB)");
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
