using System.Text.RegularExpressions;
using System.Xml.Linq;
using Quantc.Core.Reports;

namespace Quantc.Cli.Tests;

/// <summary><c>compile --charts DIR --html PAGE</c> on the bundled tiny LLaMA: the chart files and the page's inline charts.</summary>
public sealed class ChartFilesTests() : FolderTest("quantc-charts-")
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    [Fact]
    public void CompileWritesEveryChartAsAnSvgFileAndThePageEmbedsThem()
    {
        var (code, stdout, stderr) = Run("compile", "--recipe", "w8a8", "--samples", "4", "--verify-samples", "2", "-o", P("q.onnx"),
            "--html", P("q.html"), "--charts", P("charts"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains($"charts: {P("charts")} (4 SVG files)", stdout);
        var report = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("q.report.json"))).RootElement;
        var passes = report.GetProperty("passes").EnumerateArray().Select(p => p.GetProperty("pass").GetString()!).ToList();
        int layers = report.GetProperty("layers").GetArrayLength();
        int ranged = report.GetProperty("layers").EnumerateArray().Count(l => l.TryGetProperty("activation_range", out _));

        var texts = new Dictionary<string, List<string>>();
        foreach (var name in CompileCharts.Names)
        {
            string path = P(Path.Combine("charts", name + ".svg"));
            Assert.True(File.Exists(path), path);
            string text = File.ReadAllText(path);
            Assert.Contains(ReportChart.Marker, text);
            var doc = XDocument.Parse(text);
            Assert.Equal(Svg + "svg", doc.Root!.Name);
            Assert.Equal("900", doc.Root.Attribute("width")!.Value);
            texts[name] = [.. doc.Descendants(Svg + "text").Select(t => t.Value.Trim())];
            Assert.Contains(texts[name], t => t.Length > 10); // the title
        }
        // The bars chart labels every pass (as the report names it) and the formats chart counts every layer once.
        foreach (var p in passes) Assert.Contains(p, texts["pass-times"]);
        Assert.Contains($"linear layers by the formats decided, {layers} layers", texts["layer-formats"]);
        // reduce_range: auto puts w8a8's weights on a 7-bit grid on a CPU without VNNI.
        string w = Quantc.Core.Runtime.CpuFeatures.HasInt8DotProduct ? "int8" : "int7";
        Assert.Contains($"{w} W per_channel / uint8 A static", texts["layer-formats"]);
        Assert.Contains("int8", texts["weight-bytes"]);   // bytes by storage type: 7-bit weights are stored as int8
        Assert.True(ranged > 0);
        Assert.Contains($"static activation range decided per layer (max |bound|), {ranged} of {layers} layers",
            texts["activation-ranges"]);
        // One bar per ranged layer: the orange rectangles ScottPlot draws (paths filled with the chart's colour).
        var orange = XDocument.Parse(File.ReadAllText(P("charts/activation-ranges.svg"))).Descendants()
            .Count(e => (string?)e.Attribute("fill") == "#C77700");
        Assert.Equal(ranged, orange);

        // The page embeds the same charts, with ids unique across the page.
        string page = File.ReadAllText(P("q.html"));
        foreach (var name in CompileCharts.Names) Assert.Contains($"<figure class=\"chart\" id=\"chart-{name}\"", page);
        var ids = Regex.Matches(page, "\\sid=\"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(ids.Count, ids.Distinct().Count());
        foreach (Match m in Regex.Matches(page, "url\\(#([^)]+)\\)")) Assert.Contains(m.Groups[1].Value, ids);

        // A second compile replaces its own charts without --force; a foreign file of that name is refused.
        (code, _, stderr) = Run("compile", "--recipe", "w8a8", "--samples", "4", "--no-verify", "-o", P("q.onnx"), "--charts", P("charts"));
        Assert.True(code == 0, stderr);
        File.WriteAllText(P("charts/weight-bytes.svg"), "<svg/>");
        (code, _, stderr) = Run("compile", "--recipe", "w8a8", "--samples", "4", "--no-verify", "-o", P("q.onnx"), "--charts", P("charts"));
        Assert.Equal(2, code);
        Assert.Contains("weight-bytes.svg", stderr);
        Assert.Equal("<svg/>", File.ReadAllText(P("charts/weight-bytes.svg")));
    }
}
