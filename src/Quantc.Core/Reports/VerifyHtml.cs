using System.Text;
using Quantc.Core.Verification;

namespace Quantc.Core.Reports;

/// <summary>The HTML page of a verify run: output metrics and an SVG chart of SQNR per layer in graph order.</summary>
public static class VerifyHtml
{
    /// <summary>Renders the page.</summary>
    public static string Render(VerifyReport r, string original, string compiled, string data, IReadOnlyList<string> failures)
    {
        var body = new StringBuilder();
        body.Append($"<h1>quantc verify</h1><p class=\"muted\">{Html.E(original)} vs {Html.E(compiled)} — {Html.E(data)}, {r.Samples} " +
            $"samples</p>");
        body.Append(failures.Count == 0 ? "<p class=\"ok\">All checks passed.</p>"
            : string.Concat(failures.Select(f => $"<p class=\"bad\">FAILED: {Html.E(f)}</p>")));
        bool exact = r.Outputs.Any(o => o.SqnrVsExactDb is not null);
        body.Append("<h2>Outputs</h2><table><tr><th>output</th><th>SQNR dB</th><th>cosine</th><th>max |err|</th>"
            + (exact ? "<th>vs exact dB</th><th>float32 noise dB</th>" : "") + "</tr>");
        foreach (var o in r.Outputs)
            body.Append($"<tr><td>{Html.E(o.Name)}</td><td class=\"num\">{Html.F(o.SqnrDb)}</td><td " +
                $"class=\"num\">{Html.F(o.Cosine, "0.000000")}</td><td class=\"num\">{Html.F(o.MaxAbsError, "0.####E+0")}</td>"
                + (exact ? $"<td class=\"num\">{Html.F(o.SqnrVsExactDb ?? double.NaN)}</td><td " +
                    $"class=\"num\">{Html.F(o.OriginalNoiseSqnrDb ?? double.NaN)}</td>" : "") + "</tr>");
        body.Append("</table>");
        if (exact)
            body.Append("<p class=\"muted\">vs exact: the compiled model against the original evaluated in float64; float32 noise: the " +
                "float32 original against the same. " +
                "Differences at or above the noise floor's SQNR are float32 rounding, not a change of function.</p>");
        if (r.Logits is { } l)
            body.Append($"<p>Top-1 agreement {Html.F(100 * l.Top1Agreement)}%; perplexity {Html.F(l.OriginalPerplexity, "0.000")} " +
                $"→ {Html.F(l.CompiledPerplexity, "0.000")} over {l.ScoredTokens} tokens.</p>");
        if (r.Layers.Count > 0)
        {
            body.Append("<h2>Error per layer (graph order)</h2>").Append(Chart(r.Layers));
            body.Append("<h2>Activation ranges of the original model (graph order)</h2>").Append(RangeChart(r.Layers));
            body.Append("<table><tr><th>#</th><th>tensor</th><th>original</th><th>op</th><th>SQNR dB</th><th>cosine</th></tr>");
            int i = 0;
            foreach (var x in r.Layers)
                body.Append($"<tr><td class=\"num\">{i++}</td><td>{Html.E(x.CompiledName)}</td><td " +
                    $"class=\"muted\">{Html.E(x.OriginalName)}</td><td>{Html.E(x.Op)}</td><td class=\"num\">{Html.F(x.SqnrDb)}</td><td " +
                    $"class=\"num\">{Html.F(x.Cosine, "0.000000")}</td></tr>");
            body.Append("</table>");
        }
        return Html.Page("quantc verify", body.ToString(),
            "document.querySelectorAll('svg circle').forEach(function (c) { c.addEventListener('mouseenter', function () { " +
            "c.setAttribute('r', 5); }); c.addEventListener('mouseleave', function () { c.setAttribute('r', 3); }); });");
    }

    /// <summary>max |x| of each mapped tensor in the original model, log scale: where the outliers are.</summary>
    private static string RangeChart(IReadOnlyList<LayerError> layers)
    {
        const int w = 900, h = 220, pad = 40;
        // Additive attention masks (±1e30-ish, or the float minimum) are not activations: left out.
        var abs = layers.Select(l => Math.Max(Math.Abs(l.RangeMin), Math.Abs(l.RangeMax))).Select(v => double.IsFinite(v) && v > 0 &&
            v < 1e20 ? Math.Log10(v) : double.NaN).ToList();
        var finite = abs.Where(double.IsFinite).ToList();
        double lo = finite.Count == 0 ? -1 : Math.Floor(finite.Min()), hi = finite.Count == 0 ? 1 : Math.Ceiling(finite.Max());
        if (hi <= lo) hi = lo + 1;
        var sb = new StringBuilder($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" " +
            $"aria-label=\"activation ranges\">");
        sb.Append($"<rect x=\"{pad}\" y=\"10\" width=\"{w - pad - 10}\" height=\"{h - pad - 10}\" fill=\"#fff\" stroke=\"#d5dae0\"/>");
        double step = Math.Max(1, Math.Ceiling((hi - lo) / 8));
        for (double t = lo; t <= hi; t += step)
        {
            double y = 10 + (h - pad - 10) * (1 - (t - lo) / (hi - lo));
            sb.Append($"<line x1=\"{pad}\" x2=\"{w - 10}\" y1=\"{Html.F(y)}\" y2=\"{Html.F(y)}\" stroke=\"#eef1f4\"/><text x=\"2\" " +
                $"y=\"{Html.F(y + 4)}\">1e{t}</text>");
        }
        sb.Append($"<text x=\"{w / 2 - 80}\" y=\"{h - 8}\">layer (graph order) — max |activation|, log scale</text>");
        for (int i = 0; i < layers.Count; i++)
        {
            if (!double.IsFinite(abs[i])) continue;
            double x = pad + (w - pad - 20) * (layers.Count == 1 ? 0.5 : (double)i / (layers.Count - 1)) + 5;
            double y = 10 + (h - pad - 10) * (1 - (abs[i] - lo) / (hi - lo));
            sb.Append($"<line x1=\"{Html.F(x)}\" x2=\"{Html.F(x)}\" y1=\"{h - pad}\" y2=\"{Html.F(y)}\" stroke=\"#c77700\" " +
                $"stroke-width=\"2\"><title>{Html.E(layers[i].OriginalName)}: " +
                $"[{Html.F(layers[i].RangeMin, "G4")}, {Html.F(layers[i].RangeMax, "G4")}]</title></line>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    private static string Chart(IReadOnlyList<LayerError> layers)
    {
        const int w = 900, h = 260, pad = 40;
        // Above 100 dB a tensor is exact for any practical purpose: the axis stops there (drawn at the top, like ∞).
        var finite = layers.Select(l => l.SqnrDb).Where(double.IsFinite).Select(v => Math.Min(v, 100)).ToList();
        double max = finite.Count == 0 ? 100 : Math.Max(10, Math.Ceiling(finite.Max() / 10) * 10);
        double min = finite.Count == 0 ? 0 : Math.Min(0, Math.Floor(finite.Min() / 10) * 10);
        var sb = new StringBuilder($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" " +
            $"aria-label=\"SQNR per layer\">");
        sb.Append($"<rect x=\"{pad}\" y=\"10\" width=\"{w - pad - 10}\" height=\"{h - pad - 10}\" fill=\"#fff\" stroke=\"#d5dae0\"/>");
        double tick = Math.Max(10, Math.Ceiling((max - min) / 80) * 10);
        for (double t = min; t <= max; t += tick)
        {
            double y = 10 + (h - pad - 10) * (1 - (t - min) / (max - min));
            sb.Append($"<line x1=\"{pad}\" x2=\"{w - 10}\" y1=\"{Html.F(y)}\" y2=\"{Html.F(y)}\" stroke=\"#eef1f4\"/><text x=\"4\" " +
                $"y=\"{Html.F(y + 4)}\">{t}</text>");
        }
        sb.Append($"<text x=\"{w / 2 - 60}\" y=\"{h - 8}\">layer (graph order) — SQNR dB, ∞ drawn at top</text>");
        var pts = new List<string>();
        for (int i = 0; i < layers.Count; i++)
        {
            double v = double.IsPositiveInfinity(layers[i].SqnrDb) ? max : double.IsFinite(layers[i].SqnrDb)
                ? Math.Min(layers[i].SqnrDb, max) : min;
            double x = pad + (w - pad - 20) * (layers.Count == 1 ? 0.5 : (double)i / (layers.Count - 1)) + 5;
            double y = 10 + (h - pad - 10) * (1 - (v - min) / (max - min));
            pts.Add($"{Html.F(x)},{Html.F(y)}");
            sb.Append($"<circle cx=\"{Html.F(x)}\" cy=\"{Html.F(y)}\" r=\"3\" " +
                $"fill=\"#2f6fde\"><title>{Html.E(layers[i].CompiledName)}: {Html.F(layers[i].SqnrDb)} dB</title></circle>");
        }
        sb.Append($"<polyline points=\"{string.Join(' ', pts)}\" fill=\"none\" stroke=\"#2f6fde\" stroke-width=\"1.2\"/>");
        sb.Append("</svg>");
        return sb.ToString();
    }
}
