using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;

namespace Quantc.Bench;

/// <summary>Where a model's run time goes in ONNX Runtime, from its profiler (shared by the bench programs).</summary>
internal static class OrtProfile
{
    /// <summary>
    /// Kernel time per op type over <paramref name="runs"/> profiled runs of <paramref name="feed"/> (ONNX
    /// Runtime's "Node" events), the <paramref name="top"/> largest as shares of the total.
    /// </summary>
    public static string PerOpType(string path, Model ir, IReadOnlyList<(string Name, OrtValue Value)> feed, int runs = 3, int top = 8)
    {
        var inv = CultureInfo.InvariantCulture;
        using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        so.EnableProfiling = true;
        so.ProfileOutputPathPrefix = Path.Combine(Path.GetTempPath(), $"quantc-prof-{Guid.NewGuid():N}");
        if (Quantc.Core.Runtime.CustomOps.IsUsedBy(ir)) Quantc.Core.Runtime.CustomOps.Register(so);
        string file;
        using (var session = new InferenceSession(path, so))
        {
            using var ro = new RunOptions();
            for (int r = 0; r < runs; r++) { using var o = session.Run(ro, feed.Select(x => x.Name).ToList(), feed.Select(x => x.Value).ToList(), session.OutputNames.ToList()); }
            file = session.EndProfiling();
        }
        var perOp = new Dictionary<string, double>(StringComparer.Ordinal);
        using (var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file)))
            foreach (var e in doc.RootElement.EnumerateArray())
                if (e.TryGetProperty("cat", out var cat) && cat.GetString() == "Node" && e.TryGetProperty("args", out var a) && a.TryGetProperty("op_name", out var op)
                    && e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal))
                    perOp[op.GetString()!] = perOp.GetValueOrDefault(op.GetString()!) + e.GetProperty("dur").GetDouble();
        File.Delete(file);
        double total = perOp.Values.Sum();
        return string.Create(inv, $"kernel time {total / 1000 / runs:0.000} ms per run, {perOp.Count} op types: ") +
            string.Join(", ", perOp.OrderByDescending(kv => kv.Value).Take(top).Select(kv => string.Create(inv, $"{kv.Key} {100 * kv.Value / total:0}% ({kv.Value / (1000.0 * runs):0.0} ms)")));
    }
}
