using System.CommandLine;
using System.Globalization;
using Quantc.Core.Inspection;
using Spectre.Console;

namespace Quantc.Cli;

/// <summary><c>quantc inspect MODEL [--json]</c>.</summary>
internal static class InspectCommand
{
    public static Command Build(TextWriter stdout)
    {
        var model = new Argument<string?>("model") { Description = "ONNX model (default: the bundled tiny LLaMA)",
            Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "print stable JSON instead of tables" };
        var cmd = new Command("inspect", "show a model's structure: I/O, ops, parameters, external data, linear layers") { model, json };
        cmd.SetAction(pr =>
        {
            string path = pr.GetValue(model) ?? Cli.DefaultModelPath();
            using var m = Cli.LoadModel(path);
            var summary = ModelSummary.Of(m, path, Layers.Recognise(m));
            if (pr.GetValue(json)) stdout.Write(summary.ToJson());
            else Render(summary, stdout);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):0.00} MiB",
        >= 1L << 10 => $"{b / 1024.0:0.0} KiB",
        _ => $"{b} B",
    };

    private static string N(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    private static void Render(ModelSummary s, TextWriter stdout)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected ? ColorSystemSupport.Detect
                : ColorSystemSupport.NoColors,
        });
        if (!ReferenceEquals(stdout, Console.Out) || Console.IsOutputRedirected) console.Profile.Width = 200;
        console.MarkupLine($"[bold]{E(s.Path)}[/]  ({Bytes(s.FileBytes)})");
        console.MarkupLine($"IR version {s.IrVersion}, producer {E(s.Producer.Length == 0 ? "(none)" : s.Producer)}, " +
            $"opsets {E(string.Join(", ", s.Opsets.Select(o => $"{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)} {o.Version}")))}");
        console.MarkupLine($"{N(s.NodeCount)} " +
            $"nodes{(s.SubgraphCount > 0 ? $" ({s.SubgraphCount} subgraphs)" : "")}, {N(s.TotalParameters)} parameters " +
            $"in {Bytes(s.TotalParameterBytes)}");

        var io = new Table().Border(TableBorder.Simple).AddColumns("", "name", "dtype", "shape");
        foreach (var e in s.Inputs) io.AddRow("in", E(e.Name), e.ElementType, E(Shape(e.Shape)));
        foreach (var e in s.Outputs) io.AddRow("out", E(e.Name), e.ElementType, E(Shape(e.Shape)));
        console.Write(io);

        var ops = new Table().Border(TableBorder.Simple).AddColumns("op", "count");
        foreach (var kv in s.OpHistogram) ops.AddRow(E(kv.Key), N(kv.Value));
        var par = new Table().Border(TableBorder.Simple).AddColumns("dtype", "tensors", "elements", "bytes");
        foreach (var p in s.Parameters) par.AddRow(p.ElementType, N(p.Tensors), N(p.Elements), Bytes(p.Bytes));
        console.Write(new Columns(ops, par) { Expand = false });

        if (s.ExternalData.Count > 0)
        {
            var ext = new Table().Border(TableBorder.Simple).AddColumns("external data", "file size", "tensors", "tensor bytes");
            foreach (var f in s.ExternalData) ext.AddRow(E(f.Location), Bytes(f.FileBytes), N(f.Tensors), Bytes(f.TensorBytes));
            console.Write(ext);
        }

        if (s.QuantizedLayers.Count > 0)
        {
            var q = new Table().Border(TableBorder.Simple).AddColumns($"quantized linear layer ({s.QuantizedLayers.Count})", "op",
                "weights", "activations");
            foreach (var l in s.QuantizedLayers)
                q.AddRow(Markup.Escape(l.Name), Markup.Escape(l.Op), Markup.Escape(l.Weights), Markup.Escape(l.Activations));
            console.Write(q);
        }
        if (s.LinearLayers.Count > 0)
        {
            var lin = new Table().Border(TableBorder.Simple).AddColumns(s.QuantizedLayers.Count > 0
                ? $"float linear layer ({s.LinearLayers.Count})" : "linear layer", "op", "in", "out", "bias", "fed by");
            foreach (var l in s.LinearLayers)
                lin.AddRow(E(l.Name), E(l.Op), N(l.InFeatures), N(l.OutFeatures), l.HasBias ? "yes" : "", E(l.FedBy ?? ""));
            console.Write(lin);
        }
        else if (s.QuantizedLayers.Count == 0) console.MarkupLine("no linear layers recognised");
    }

    /// <summary>A name from the model as Spectre markup: escape sequences made visible (<see cref="Cli.Printable"/>), brackets
    /// escaped.</summary>
    private static string E(string s) => Markup.Escape(Cli.Printable(s));

    private static string Shape(IReadOnlyList<string>? shape) => shape is null ? "?" : "[" + string.Join(", ", shape) + "]";
}
