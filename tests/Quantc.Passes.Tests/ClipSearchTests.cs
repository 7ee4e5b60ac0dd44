using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>clip_search: each static range shrunk by the ratio of least output error on sampled rows.</summary>
public sealed class ClipSearchTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-clip");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>
    /// Every static layer's range is its minmax range times the ratio the log names for its input, and that ratio has
    /// the least of the errors listed; readers of one input share it.
    /// </summary>
    [Fact]
    public void RangesAreTheMinMaxRangesTimesTheBestRatio()
    {
        using var a = LoadLlama(_dir, "torch");
        using var b = LoadLlama(_dir, "torch");
        var calib = Calibration(a, 2);
        const string head = "passes: [{quantize: {weights: int8, activations: int8, mode: static}}, ranges";
        var plain = TestCompiler.Compile(a, head + "]", calib).Context.Plan;
        var ctx = TestCompiler.Compile(b, head + ", {clip_search: {rows: 32}}]", calib).Context;
        var lines = ctx.Log.Where(l => l.StartsWith("clip_search: model.", StringComparison.Ordinal)).ToList();
        foreach (var l in lines) log.WriteLine(l);
        Assert.Equal(16, lines.Count);   // 4 layers × (q/k/v, o, gate/up, down); lm_head stays float
        int clipped = 0;
        foreach (var line in lines)
        {
            var m = System.Text.RegularExpressions.Regex.Match(line, @"^clip_search: (.+): clip ratio ([\d.]+) \(output error (.+)\)$");
            Assert.True(m.Success, line);
            var inv = System.Globalization.CultureInfo.InvariantCulture;
            var errors = m.Groups[3].Value.Split(' ').Select(e => e.Split(':'))
                .ToDictionary(p => double.Parse(p[0], inv), p => double.Parse(p[1], inv));
            double ratio = double.Parse(m.Groups[2].Value, inv);
            Assert.Equal(errors.Values.Min(), errors[ratio]);
            if (ratio < 1) clipped++;
            foreach (var name in m.Groups[1].Value.Split(", "))
            {
                var (lo, hi) = plain[name].ActivationRange!.Value;
                var (clo, chi) = ctx.Plan[name].ActivationRange!.Value;
                Assert.Equal(lo * ratio, clo, 1e-4 * Math.Abs(lo) + 1e-6);
                Assert.Equal(hi * ratio, chi, 1e-4 * Math.Abs(hi) + 1e-6);
            }
        }
        log.WriteLine($"{clipped} of {lines.Count} inputs clipped");
    }

    [Fact]
    public void ARatioOutsideTheUnitIntervalIsABadInput()
    {
        using var m = LoadLlama(_dir, "torch");
        var e = Assert.Throws<BadInputException>(() => RunRecipe(m, "passes: [{clip_search: {grid: [1.0, 1.5]}}]"));
        Assert.Contains("'grid': 1.5 is not in (0, 1]", e.Message, StringComparison.Ordinal);
    }
}
