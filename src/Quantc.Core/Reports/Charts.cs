using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using ScottPlot;

namespace Quantc.Core.Reports;

/// <summary>
/// One chart of a report, drawn by ScottPlot into a standalone SVG document. Pages embed it inline (they stay
/// self-contained); <c>compile --charts</c> writes it as a file. Charts over layers carry each point's pixel position and a
/// label, which the pages' script shows under the chart while the pointer is over it.
/// </summary>
public sealed record ReportChart(string Name, string Title, string Svg, IReadOnlyList<double>? PointX = null,
    IReadOnlyList<string>? PointLabels = null)
{
    /// <summary>The comment every chart file starts with (after the XML declaration): how an earlier output is recognised.</summary>
    public const string Marker = "<!-- generator: quantc -->";

    /// <summary>The chart as a figure for a page: the SVG without its XML declaration and, over layers, the hover read-out.</summary>
    public string Figure()
    {
        var b = new StringBuilder($"<figure class=\"chart\" id=\"chart-{Html.E(Name)}\"");
        if (PointX is not null && PointLabels is not null)
            b.Append($" data-xs=\"{Html.E(JsonSerializer.Serialize(PointX.Select(x => Math.Round(x, 1))))}\" " +
                $"data-tips=\"{Html.E(JsonSerializer.Serialize(PointLabels))}\"");
        b.Append('>').Append(Svg[(Svg.IndexOf("<svg", StringComparison.Ordinal))..]);
        if (PointLabels is not null)
            b.Append("<figcaption class=\"muted\"><span class=\"tip\">point at a layer for its name and value</span></figcaption>");
        return b.Append("</figure>").ToString();
    }

    /// <summary>The page script that fills a chart's read-out with the label of the point nearest the pointer.</summary>
    public const string Script = """
        document.querySelectorAll('figure.chart[data-tips]').forEach(function (f) {
          const xs = JSON.parse(f.dataset.xs), tips = JSON.parse(f.dataset.tips), svg = f.querySelector('svg');
          const tip = f.querySelector('.tip'), w = +svg.getAttribute('width');
          svg.addEventListener('mousemove', function (e) {
            const r = svg.getBoundingClientRect(), x = (e.clientX - r.left) * w / r.width;
            let best = 0;
            for (let i = 1; i < xs.length; i++) if (Math.abs(xs[i] - x) < Math.abs(xs[best] - x)) best = i;
            tip.textContent = tips[best];
          });
        });
        """;
}

/// <summary>The charts quantc's reports draw, each from figures the report already has.</summary>
public static partial class Charts
{
    public const int Width = 900, Height = 280;
    private const string Font = "DejaVu Sans";
    private static readonly Color Blue = Color.FromHex("#2f6fde"), Orange = Color.FromHex("#c77700");

    /// <summary>Per layer in graph order: SQNR in dB. Above 100 dB a tensor is exact for any practical purpose: such points (∞
    /// included) are drawn at the top.</summary>
    public static ReportChart SqnrPerLayer(string name, string title, IReadOnlyList<(string Label, double Db)> layers)
    {
        var finite = layers.Select(l => l.Db).Where(double.IsFinite).Select(v => Math.Min(v, 100)).ToList();
        double top = finite.Count == 0 ? 100 : Math.Max(10, Math.Ceiling(finite.Max() / 10) * 10);
        double bottom = finite.Count == 0 ? 0 : Math.Min(0, Math.Floor(finite.Min() / 10) * 10);
        var ys = layers.Select(l => double.IsPositiveInfinity(l.Db) ? top : double.IsFinite(l.Db) ? Math.Min(l.Db, top) : bottom)
            .ToArray();
        using var plot = NewPlot(title, "layer (graph order)", "SQNR dB");
        var s = plot.Add.Scatter(Enumerable.Range(0, ys.Length).Select(i => (double)i).ToArray(), ys, Blue);
        s.MarkerSize = 6;
        plot.Axes.SetLimitsY(bottom, top + (top - bottom) * 0.04);
        return Render(plot, name, title, layers.Select((l, i) => new Coordinates(i, ys[i])).ToList(),
            [.. layers.Select(l => $"{l.Label}: {Html.F(l.Db)} dB")]);
    }

    /// <summary>Per layer in graph order: the largest magnitude of its range, on a log scale (where the outliers are). Ranges with
    /// no finite non-zero bound, or beyond 1e20 (additive attention masks), are left out.</summary>
    public static ReportChart RangePerLayer(string name, string title, string xLabel,
        IReadOnlyList<(string Label, double Lo, double Hi)> layers)
    {
        var logs = layers.Select(l => Math.Max(Math.Abs(l.Lo), Math.Abs(l.Hi)))
            .Select(v => double.IsFinite(v) && v > 0 && v < 1e20 ? Math.Log10(v) : double.NaN).ToArray();
        var finite = logs.Where(double.IsFinite).ToList();
        double lo = finite.Count == 0 ? -1 : Math.Floor(finite.Min()), hi = finite.Count == 0 ? 1 : Math.Ceiling(finite.Max());
        if (hi <= lo) hi = lo + 1;
        using var plot = NewPlot(title, xLabel, "max |value|");
        var bars = new List<Bar>();
        for (int i = 0; i < logs.Length; i++)
            if (double.IsFinite(logs[i]))
                bars.Add(new Bar { Position = i, Value = logs[i], ValueBase = lo, FillColor = Orange, LineWidth = 0, Size = 0.8 });
        plot.Add.Bars(bars);
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            IntegerTicksOnly = true,
            LabelFormatter = v => "1e" + v.ToString("0", CultureInfo.InvariantCulture),
        };
        plot.Axes.SetLimitsY(lo, hi);
        var points = logs.Select((v, i) => new Coordinates(i, double.IsFinite(v) ? v : lo)).ToList();
        return Render(plot, name, title, points,
            [.. layers.Select(l => $"{l.Label}: [{Html.F(l.Lo, "G4")}, {Html.F(l.Hi, "G4")}]")]);
    }

    /// <summary>Horizontal bars, one per labelled value, top to bottom in the given order.</summary>
    public static ReportChart Bars(string name, string title, string unit, IReadOnlyList<(string Label, double Value)> items)
    {
        using var plot = NewPlot(title, unit, null);
        var bars = items.Select((x, i) => new Bar
        {
            Position = items.Count - 1 - i, Value = x.Value, FillColor = Blue, LineWidth = 0, Size = 0.7,
            Label = Html.F(x.Value, x.Value >= 100 ? "0" : "G3"),
        }).ToList();
        var bp = plot.Add.Bars(bars);
        bp.Horizontal = true;
        bp.ValueLabelStyle.FontName = Font;
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int i = 0; i < items.Count; i++) ticks.AddMajor(items.Count - 1 - i, Shorten(items[i].Label));
        plot.Axes.Left.TickGenerator = ticks;
        plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Axes.Margins(left: 0, right: 0.12, bottom: 0.02, top: 0.02);
        int height = Math.Clamp(60 + 26 * items.Count, 140, 640);
        return Render(plot, name, title, null, null, height);
    }

    private static string Shorten(string s) => s.Length <= 44 ? s : s[..20] + "…" + s[^23..];

    private static Plot NewPlot(string title, string xLabel, string? yLabel)
    {
        var plot = new Plot();
        plot.Font.Set(Font);
        plot.Axes.Bottom.Label.Text = xLabel;
        plot.Axes.Bottom.Label.FontSize = 12;
        plot.Axes.Bottom.Label.Bold = false;
        if (yLabel is not null)
        {
            plot.Axes.Left.Label.Text = yLabel;
            plot.Axes.Left.Label.FontSize = 12;
            plot.Axes.Left.Label.Bold = false;
        }
        plot.Grid.MajorLineColor = Color.FromHex("#e3e6ea");
        plot.Title(title, size: 14);
        return plot;
    }

    private static ReportChart Render(Plot plot, string name, string title, IReadOnlyList<Coordinates>? points,
        IReadOnlyList<string>? labels, int height = Height)
    {
        string svg = plot.GetSvgXml(Width, height);
        // Several charts share a page: their element ids (clip paths) get the chart's name as a prefix.
        svg = IdAttribute().Replace(svg, m => $"{m.Groups[1].Value}=\"{(m.Groups[2].Value.Length > 0 ? "#" : "")}{name}-" +
            $"{m.Groups[3].Value}\"");
        svg = UrlReference().Replace(svg, m => $"url(#{name}-{m.Groups[1].Value})");
        int at = svg.IndexOf("<svg", StringComparison.Ordinal);
        if (at < 0) throw new InvalidOperationException("ScottPlot wrote no <svg> element");
        svg = svg[..at] + ReportChart.Marker + "\n" + svg[at..];
        var xs = points?.Select(p => (double)plot.GetPixel(p).X).ToList();
        return new ReportChart(name, title, svg, xs, labels);
    }

    [GeneratedRegex("\\b(id|href|xlink:href)=\"(#?)([^\"]+)\"")]
    private static partial Regex IdAttribute();

    [GeneratedRegex("url\\(#([^)]+)\\)")]
    private static partial Regex UrlReference();
}
