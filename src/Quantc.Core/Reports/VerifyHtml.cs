using System.Text;
using Quantc.Core.Verification;

namespace Quantc.Core.Reports;

/// <summary>The HTML page of a verify run: output metrics and, per layer in graph order, charts of the SQNR and of the original
/// model's activation ranges (<see cref="Charts"/>).</summary>
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
            body.Append("<h2>Error per layer (graph order)</h2>").Append(Charts.SqnrPerLayer("sqnr",
                "SQNR per layer, graph order (∞ and above 100 dB drawn at the top)", [.. r.Layers.Select(x => (x.CompiledName, x.SqnrDb))])
                .Figure());
            // The original model's ranges; additive attention masks (±1e30-ish, or the float minimum) are not activations: left out.
            body.Append("<h2>Activation ranges of the original model (graph order)</h2>").Append(Charts.RangePerLayer("ranges",
                "max |activation| per layer, log scale", "layer (graph order)",
                [.. r.Layers.Select(x => (x.OriginalName, x.RangeMin, x.RangeMax))]).Figure());
            body.Append("<table><tr><th>#</th><th>tensor</th><th>original</th><th>op</th><th>SQNR dB</th><th>cosine</th></tr>");
            int i = 0;
            foreach (var x in r.Layers)
                body.Append($"<tr><td class=\"num\">{i++}</td><td>{Html.E(x.CompiledName)}</td><td " +
                    $"class=\"muted\">{Html.E(x.OriginalName)}</td><td>{Html.E(x.Op)}</td><td class=\"num\">{Html.F(x.SqnrDb)}</td><td " +
                    $"class=\"num\">{Html.F(x.Cosine, "0.000000")}</td></tr>");
            body.Append("</table>");
        }
        return Html.Page("quantc verify", body.ToString(), ReportChart.Script);
    }
}
