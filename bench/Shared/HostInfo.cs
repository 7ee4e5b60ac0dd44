namespace Quantc.Bench;

/// <summary>The host a figure was measured on (shared by the bench programs): CPU model, the SIMD features that choose the
/// kernels' paths, cores and the load average (the machine may be shared with other jobs).</summary>
internal static class HostInfo
{
    public static string Line()
    {
        var cpuinfo = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").ToList() : [];
        string Field(string name) =>
            cpuinfo.FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        string flags = string.Join(" ", Field("flags").Split(' ').Where(f => f is "avx2" or "fma" or "avx512f" or "avx512_vnni"));
        bool vnni = flags.Contains("avx512_vnni", StringComparison.Ordinal);
        string load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
        return $"CPU: {Field("model name")} ({flags}; avx512_vnni {(vnni ? "present" : "absent")}), {Environment.ProcessorCount} cores, " +
            $"load average {load}";
    }
}
