using System.CommandLine;
using System.Text;
using System.Text.Json;
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
        var html = new Option<string?>("--html") { Description = "also write a self-contained HTML page drawing the graph with changes highlighted" };
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
            if (pr.GetValue(json)) stdout.Write(ToJson(d));
            else Render(d, stdout);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static void Render(DiffResult d, TextWriter o)
    {
        // Colour on an interactive terminal only (plain when piped, redirected or in CI).
        bool colour = ReferenceEquals(o, Console.Out) && !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null && ProgressBar.Enabled;
        string C(string code, string text) => colour ? $"\u001b[{code}m{text}\u001b[0m" : text;
        if (d.IsEmpty) { o.WriteLine("no differences"); return; }
        o.WriteLine($"{d.Layers.Count} layers changed; nodes matched by provenance {d.MatchedByProvenance}, by name {d.MatchedByName}, by structure {d.MatchedByStructure}");
        foreach (var l in d.Layers)
        {
            o.WriteLine($"{C("1", Cli.Printable(l.Layer))}: {Cli.Printable(l.Summary)}");
            foreach (var n in d.Nodes.Where(n => n.Layer == l.Layer))
            {
                var (sign, code) = n.Change switch { NodeChange.Added => ("+", "32"), NodeChange.Removed => ("-", "31"), _ => ("~", "33") };
                o.WriteLine($"  {C(code, $"{sign} {n.Change.ToString().ToLowerInvariant(),-8}")} {Cli.Printable($"{n.NameB ?? n.NameA} ({(n.OpB.Length > 0 ? n.OpB : n.OpA)}) {n.Detail}")}");
            }
            foreach (var i in d.Initializers.Where(i => i.Layer == l.Layer))
                o.WriteLine(Cli.Printable($"  * {i.NameB ?? i.NameA}: {i.Detail}{(i.MaxAbsDelta is { } m ? $", max |Δ| {m:G4}" : "")}{(i.SqnrDb is { } s ? $", SQNR {VerifyCommand.Db(s)} dB" : "")}"));
        }
    }

    private static string ToJson(DiffResult d)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteBoolean("identical", d.IsEmpty);
            w.WriteStartObject("matched");
            w.WriteNumber("provenance", d.MatchedByProvenance);
            w.WriteNumber("name", d.MatchedByName);
            w.WriteNumber("structure", d.MatchedByStructure);
            w.WriteEndObject();
            w.WriteStartArray("layers");
            foreach (var l in d.Layers)
            {
                w.WriteStartObject();
                w.WriteString("layer", l.Layer);
                w.WriteString("summary", l.Summary);
                w.WriteNumber("nodes_added", l.NodesAdded);
                w.WriteNumber("nodes_removed", l.NodesRemoved);
                w.WriteNumber("nodes_changed", l.NodesChanged);
                w.WriteNumber("initializers_changed", l.InitializersChanged);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("nodes");
            foreach (var n in d.Nodes)
            {
                w.WriteStartObject();
                w.WriteString("change", n.Change.ToString().ToLowerInvariant());
                w.WriteString("layer", n.Layer);
                if (n.NameA is null) w.WriteNull("a"); else w.WriteString("a", n.NameA);
                if (n.NameB is null) w.WriteNull("b"); else w.WriteString("b", n.NameB);
                w.WriteString("op_a", n.OpA);
                w.WriteString("op_b", n.OpB);
                w.WriteString("detail", n.Detail);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("initializers");
            foreach (var i in d.Initializers)
            {
                w.WriteStartObject();
                w.WriteString("layer", i.Layer);
                if (i.NameA is null) w.WriteNull("a"); else w.WriteString("a", i.NameA);
                if (i.NameB is null) w.WriteNull("b"); else w.WriteString("b", i.NameB);
                w.WriteString("dtype_a", i.DtypeA);
                w.WriteString("dtype_b", i.DtypeB);
                w.WriteString("shape_a", i.ShapeA);
                w.WriteString("shape_b", i.ShapeB);
                w.WriteNumber("bytes_a", i.BytesA);
                w.WriteNumber("bytes_b", i.BytesB);
                if (i.MaxAbsDelta is { } m) VerifyCommand.Num(w, "max_abs_delta", m); else w.WriteNull("max_abs_delta");
                if (i.SqnrDb is { } s) VerifyCommand.Num(w, "sqnr_db", s); else w.WriteNull("sqnr_db");
                w.WriteString("detail", i.Detail);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }
}
