using System.CommandLine;
using Quantc.Core.Compilation;
using Quantc.Core.Diff;
using Quantc.Core.IO;

namespace Quantc.Cli;

/// <summary><c>quantc diff A B [--json]</c>.</summary>
internal static class DiffCommand
{
    public static Command Build(TextWriter stdout)
    {
        var a = new Argument<string>("a") { Description = "the first model (e.g. the original)" };
        var b = new Argument<string>("b") { Description = "the second model (e.g. the compiled one)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var html = new Option<string?>("--html") { Description = "also write a self-contained HTML page drawing the graph with changes " +
            "highlighted" };
        var force = Cli.ForceOption();
        var cmd = new Command("diff", "structural diff of two models, grouped by layer") { a, b, json, html, force };
        cmd.SetAction(pr =>
        {
            using var ma = Cli.LoadModel(pr.GetValue(a)!);
            using var mb = Cli.LoadModel(pr.GetValue(b)!);
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddModelInput(pr.GetValue(a)!, ma);
            outputs.AddModelInput(pr.GetValue(b)!, mb);
            string? stagedHtml = pr.GetValue(html) is { } page ? outputs.Add("--html", page, OutputKind.Html) : null;
            var d = GraphDiff.Compute(ma, mb);
            if (stagedHtml is not null)
            {
                Quantc.Core.Reports.Html.Write(stagedHtml, Quantc.Core.Reports.DiffHtml.Render(d, mb, pr.GetValue(a)!, pr.GetValue(b)!));
                outputs.Commit();
            }
            if (pr.GetValue(json)) stdout.Write(DiffReport.From(d).ToJson());
            else Render(d, stdout);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static void Render(DiffResult d, TextWriter o)
    {
        // Colour on an interactive terminal only (plain when piped, redirected or in CI).
        bool colour = ReferenceEquals(o, Console.Out) && !Console.IsOutputRedirected &&
            Environment.GetEnvironmentVariable("NO_COLOR") is null && ProgressBar.Enabled;
        string C(string code, string text) => colour ? $"\u001b[{code}m{text}\u001b[0m" : text;
        if (d.IsEmpty) { o.WriteLine("no differences"); return; }
        o.WriteLine($"{d.Layers.Count} layers changed; nodes matched by provenance {d.MatchedByProvenance}, by name {d.MatchedByName}, " +
            $"by structure {d.MatchedByStructure}");
        foreach (var l in d.Layers)
        {
            o.WriteLine($"{C("1", Cli.Printable(l.Layer))}: {Cli.Printable(l.Summary)}");
            foreach (var n in d.Nodes.Where(n => n.Layer == l.Layer))
            {
                var (sign, code) = n.Change switch { NodeChange.Added => ("+", "32"), NodeChange.Removed => ("-", "31"), _ => ("~", "33") };
                string change = C(code, $"{sign} {n.Change.ToString().ToLowerInvariant(),-8}");
                o.WriteLine($"  {change} {Cli.Printable($"{n.NameB ?? n.NameA} ({(n.OpB.Length > 0 ? n.OpB : n.OpA)}) {n.Detail}")}");
            }
            foreach (var i in d.Initializers.Where(i => i.Layer == l.Layer))
            {
                string delta = i.MaxAbsDelta is { } m ? $", max |Δ| {m:G4}" : "";
                string sqnr = i.SqnrDb is { } s ? $", SQNR {ReportNumberConverter.Db(s)} dB" : "";
                o.WriteLine(Cli.Printable($"  * {i.NameB ?? i.NameA}: {i.Detail}{delta}{sqnr}"));
            }
        }
    }
}
