using System.Globalization;
using System.Net;
using System.Text;

namespace Quantc.Core.Reports;

/// <summary>Helpers for quantc's self-contained HTML pages (no external scripts, styles or fonts).</summary>
public static class Html
{
    /// <summary>HTML-escapes text.</summary>
    public static string E(string s) => WebUtility.HtmlEncode(s);

    /// <summary>Invariant number formatting.</summary>
    public static string F(double v, string format = "0.##") =>
        double.IsPositiveInfinity(v) ? "inf" : double.IsNegativeInfinity(v) ? "-inf" : double.IsNaN(v) ? "n/a"
            : v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>
    /// A page with quantc's style and a status marker: the body gets data-status="ok" once the
    /// page's script has run, and "error: ..." on any script error (tests read it back from a
    /// headless browser's DOM).
    /// </summary>
    public static string Page(string title, string body, string script)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"generator\" " +
            "content=\"quantc\"><title>").Append(E(title)).Append("</title>\n<style>\n");
        sb.Append("""
            body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
            h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 8px}
            table{border-collapse:collapse;margin:8px 0}
            th,td{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left;font-variant-numeric:tabular-nums}
            th{background:#eef1f4} td.num{text-align:right}
            .muted{color:#6b7380} .bad{color:#b3261e;font-weight:600} .ok{color:#1b7f3b}
            .graph svg text{font:11px system-ui,sans-serif} .layer{cursor:pointer} .layer:hover rect{stroke-width:2.5}
            #details{position:sticky;top:12px;background:#fff;border:1px solid #d5dae0;border-radius:6px;padding:10px 14px;min-height:60px}
            .wrap{display:flex;gap:20px;align-items:flex-start}
            .graph{flex:1;overflow:auto;max-height:85vh;border:1px solid #d5dae0;border-radius:6px;background:#fff}
            figure.chart{margin:8px 0} figure.chart svg{max-width:100%;height:auto;border:1px solid #e3e6ea;border-radius:4px}
            .legend span{display:inline-block;padding:1px 8px;margin-right:6px;border-radius:4px}
            """);
        sb.Append("</style></head>\n<body data-status=\"loading\">\n");
        sb.Append(body);
        sb.Append("\n<script>\n\"use strict\";\n");
        sb.Append("window.addEventListener('error', function (e) { document.body.dataset.status = 'error: ' + e.message; });\n");
        sb.Append("try {\n").Append(script).Append("\ndocument.body.dataset.status = 'ok';\n} catch (e) { document.body.dataset.status = " +
            "'error: ' + e; }\n");
        sb.Append("</script>\n</body></html>\n");
        return sb.ToString();
    }

    /// <summary>Writes a page atomically.</summary>
    public static void Write(string path, string html)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = Quantc.Onnx.OnnxModelWriter.TempPath(dir);
        try
        {
            File.WriteAllText(tmp, html, new UTF8Encoding(false));
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}
