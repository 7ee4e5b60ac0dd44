using System.Text;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;

namespace Quantc.Core.Reports;

/// <summary>The HTML page of a compile: passes with timings, the plan of every layer with the reasons behind it, the log, the
/// verification, and the charts of <see cref="CompileCharts"/> inline.</summary>
public static class CompileHtml
{
    /// <summary>Renders the page (<paramref name="charts"/>: those already drawn for this compile, else drawn here).</summary>
    public static string Render(string input, string output, Recipe recipe, PassContext ctx, IReadOnlyList<PassTiming> timings,
        VerifyReport? verify, string? verifyData, IReadOnlyList<ReportChart>? charts = null)
    {
        var b = new StringBuilder();
        b.Append($"<h1>quantc compile</h1><p class=\"muted\">{Html.E(input)} → {Html.E(output)}</p>");
        b.Append($"<p>Recipe <b>{Html.E(recipe.Name)}</b>: {Html.E(recipe.Description)}</p>");
        if (verify is not null)
        {
            var o = verify.Outputs.FirstOrDefault(x => x.Name == "logits") ?? verify.Outputs[0];
            b.Append($"<p>Verified on {Html.E(verifyData ?? "")}: {Html.E(o.Name)} SQNR <b>{Html.F(o.SqnrDb)} dB</b>, " +
                $"cosine {Html.F(o.Cosine, "0.0000")}");
            if (verify.Logits is { } l)
                b.Append($", top-1 agreement {Html.F(100 * l.Top1Agreement, "0.0")} %, " +
                    $"perplexity {Html.F(l.OriginalPerplexity, "0.000")} → {Html.F(l.CompiledPerplexity, "0.000")}");
            b.Append("</p>");
        }
        b.Append("<h2>Charts</h2>");
        foreach (var c in charts ?? CompileCharts.Build(ctx, timings)) b.Append(c.Figure());
        b.Append("<h2>Passes</h2><table><tr><th>pass</th><th>kind</th><th>ms</th><th>nodes</th></tr>");
        foreach (var t in timings)
            b.Append($"<tr><td>{Html.E(t.Pass)}</td><td>{t.Kind}</td><td " +
                $"class=\"num\">{Html.F(t.Elapsed.TotalMilliseconds, "0")}</td><td class=\"num\">{t.NodesBefore} " +
                $"→ {t.NodesAfter}</td></tr>");
        b.Append("</table><h2>Layers</h2><p class=\"muted\">Click a row for the reasons behind its decisions.</p><table " +
            "id=\"layers\"><tr><th>layer</th><th>decision</th></tr>");
        int i = 0;
        foreach (var p in ctx.Plan.Layers)
        {
            b.Append($"<tr class=\"layer\" data-i=\"{i}\"><td>{Html.E(p.Name)}</td><td>{Html.E(p.ToString())}</td></tr>");
            b.Append($"<tr class=\"why\" id=\"why{i}\" hidden><td colspan=\"2\" " +
                $"class=\"muted\">{string.Join("<br>", p.Reasons.Concat(p.Transforms).Select(Html.E))}</td></tr>");
            i++;
        }
        b.Append("</table>");
        if (ctx.Log.Count > 0) b.Append("<h2>Log</h2><pre>").Append(Html.E(string.Join("\n", ctx.Log))).Append("</pre>");
        const string script = """
            document.querySelectorAll('tr.layer').forEach(function (r) {
              r.style.cursor = 'pointer';
              r.addEventListener('click', function () { var w = document.getElementById('why' + r.dataset.i); w.hidden = !w.hidden; });
            });
            """;
        return Html.Page($"quantc compile — {recipe.Name}", b.ToString(), script + ReportChart.Script);
    }
}
