using System.Diagnostics;
using Xunit.Abstractions;

namespace Quantc.Models.Tests;

/// <summary>A fact that runs only when an environment variable is set (long benchmarks).</summary>
public sealed class EnvFactAttribute : FactAttribute
{
    public EnvFactAttribute(string variable)
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(variable))) Skip = $"set {variable} to run";
    }
}

public class ScaleTests(ITestOutputHelper output)
{
    private static long PeakRssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }

    [Fact]
    public void SmallBuildsWithExternalDataAndRuns()
    {
        var dir = Directory.CreateTempSubdirectory("quantc-small-");
        try
        {
            var sw = Stopwatch.StartNew();
            var r = ReferenceModels.BuildAndSave("llama", "small", 0, "ortgenai", Path.Combine(dir.FullName, "small.onnx"));
            output.WriteLine($"small ortgenai: built and saved in {sw.Elapsed.TotalSeconds:F1} s; {r.ExternalTensors} external tensors, {r.ExternalBytes / 1e6:F1} MB");
            Assert.NotNull(r.ExternalDataPath);
            using var m = Quantc.Ir.Model.Load(r.ModelPath);
            using var d = new Decoder(m);
            var logits = d.Run(LlamaTests.Tokens("Small models are for benchmarks.\n"), only: ["logits"])["logits"];
            Assert.All(logits.Data, x => Assert.True(float.IsFinite(x)));
        }
        finally { dir.Delete(true); }
    }

    /// <summary>
    /// Builds the 1b model into $QUANTC_BENCH_1B (a folder), reporting build time and peak RSS, then
    /// runs a short prefill in ONNX Runtime. Weights are generated while they are written, so peak
    /// memory stays far below the 3.9 GB of weights.
    /// </summary>
    [EnvFact("QUANTC_BENCH_1B")]
    public void OneBillionBuildsStreamingAndRuns()
    {
        string dir = Environment.GetEnvironmentVariable("QUANTC_BENCH_1B")!;
        Directory.CreateDirectory(dir);
        string flavor = Environment.GetEnvironmentVariable("QUANTC_BENCH_FLAVOR") ?? "torch";
        string arch = Environment.GetEnvironmentVariable("QUANTC_BENCH_ARCH") ?? "llama";
        var sw = Stopwatch.StartNew();
        using var m = ReferenceModels.Build(arch, "1b", 0, flavor);
        double buildS = sw.Elapsed.TotalSeconds;
        var r = m.Save(Path.Combine(dir, $"{arch}-1b-{flavor}.onnx"));
        double totalS = sw.Elapsed.TotalSeconds;
        long rss = PeakRssBytes();
        output.WriteLine($"{arch} 1b {flavor}: {ReferenceModels.ParameterCount(arch, "1b"):N0} parameters; graph + outlier placement {buildS:F1} s, build and save {totalS:F1} s, {r.ExternalBytes / 1e9:F2} GB external data in {r.ExternalTensors} tensors, peak RSS {rss / 1e6:F0} MB");
        Assert.True(rss < 1_000_000_000, $"peak RSS {rss / 1e6:F0} MB: weights are being held in memory");
        if (Environment.GetEnvironmentVariable("QUANTC_BENCH_RUN") == "1")
        {
            sw.Restart();
            using var loaded = Quantc.Ir.Model.Load(r.ModelPath);
            using var d = new Decoder(loaded);
            var logits = d.Run(LlamaTests.Tokens("One billion parameters.\n"), only: ["logits"])["logits"];
            output.WriteLine($"{arch} 1b {flavor}: ORT load and 25-token prefill in {sw.Elapsed.TotalSeconds:F1} s");
            Assert.All(logits.Data, x => Assert.True(float.IsFinite(x)));
        }
    }
}
