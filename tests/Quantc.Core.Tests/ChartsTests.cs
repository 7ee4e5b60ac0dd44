using System.Xml.Linq;
using Quantc.Core.Reports;

namespace Quantc.Core.Tests;

/// <summary>The report charts (ScottPlot): valid SVG, the points where the figures put them, labels for the hover read-out.</summary>
public sealed class ChartsTests
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    private static XDocument Parse(ReportChart c)
    {
        Assert.Contains(ReportChart.Marker, c.Svg);
        var doc = XDocument.Parse(c.Svg);
        Assert.Equal(Svg + "svg", doc.Root!.Name);
        return doc;
    }

    [Fact]
    public void SqnrChartDrawsEveryLayerAndPutsInfiniteAndHugeValuesAtTheTop()
    {
        (string, double)[] layers = [("a", 30), ("b", double.PositiveInfinity), ("c", 250), ("d", -12.5), ("e", double.NaN)];
        var c = Charts.SqnrPerLayer("sqnr", "SQNR per layer", layers);
        var doc = Parse(c);
        var dots = doc.Descendants(Svg + "ellipse").ToList();
        Assert.Equal(layers.Length, dots.Count);
        var ys = dots.Select(d => double.Parse(d.Attribute("cy")!.Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(ys[1], ys[2], 3);          // ∞ and 250 dB both at the top of the axis (100 dB)
        Assert.True(ys[1] <= ys[0] + 1e-9);
        Assert.True(ys[3] > ys[0]);              // -12.5 dB lower on the page than 30 dB
        Assert.True(ys[4] >= ys[3]);             // NaN at the bottom
        Assert.Equal(["a: 30 dB", "b: inf dB", "c: 250 dB", "d: -12.5 dB", "e: n/a dB"], c.PointLabels);
        // The read-out's pixel positions are the dots' centres, left to right.
        Assert.Equal(dots.Select(d => Math.Round(double.Parse(d.Attribute("cx")!.Value, System.Globalization.CultureInfo.InvariantCulture),
            1)), c.PointX!.Select(x => Math.Round(x, 1)));
        Assert.True(c.PointX!.Zip(c.PointX!.Skip(1)).All(p => p.First < p.Second));
    }

    [Fact]
    public void RangeChartLeavesOutMasksAndEmptyRanges()
    {
        (string, double, double)[] layers = [("a", -3, 4), ("mask", -3.4e38, 0), ("b", 0, 0), ("c", -120, 80), ("d", double.NaN, 1)];
        var c = Charts.RangePerLayer("r", "ranges", "layer", layers);
        var bars = Parse(c).Descendants().Where(e => (string?)e.Attribute("fill") == "#C77700").ToList();
        Assert.Equal(2, bars.Count); // a and c; the mask, the empty range and the NaN bound are left out
        Assert.Equal(5, c.PointLabels!.Count);
        Assert.Equal("c: [-120, 80]", c.PointLabels[3]);
    }

    [Fact]
    public void BarChartLabelsEveryItemAndTwoChartsOnOnePageShareNoId()
    {
        var a = Charts.Bars("one", "time per pass", "ms", [("quantize", 12.5), ("lower_qdq", 480)]);
        var b = Charts.Bars("two", "bytes", "MiB", [("int8", 0.703)]);
        var texts = Parse(a).Descendants(Svg + "text").Select(t => t.Value.Trim()).ToList();
        foreach (var t in new[] { "time per pass", "quantize", "lower_qdq", "12.5", "480" }) Assert.Contains(t, texts);
        Assert.Null(a.PointX);
        Assert.DoesNotContain("<?xml", a.Figure());
        var ids = new[] { a, b }.SelectMany(c => Parse(c).Descendants().Select(e => (string?)e.Attribute("id")).OfType<string>()).ToList();
        Assert.NotEmpty(ids);
        Assert.Equal(ids.Count, ids.Distinct().Count());
        Assert.All(Parse(b).Descendants().Select(e => (string?)e.Attribute("id")).OfType<string>(), id => Assert.StartsWith("two-", id));
    }
}
