using System.CommandLine;
using System.Globalization;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.IO;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Cli;

/// <summary><c>quantc calibrate MODEL --calib DATA -o STATS.json</c>: collect activation statistics once, reuse them in later
/// compiles.</summary>
internal static class CalibrateCommand
{
    public static Command Build(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("model") { Description = "the float model" };
        var calib = new Option<string>("--calib") { Description = "calibration data: text, token ids (.npy/.jsonl), inputs (.npz or a " +
            "folder of them), or 'random'", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "statistics file to write (JSON)", Required = true };
        var seq = new Option<int>("--seq-len") { Description = "tokens per sample for text/ids", DefaultValueFactory = _ => 128 };
        var samples = new Option<int>("--samples") { Description = "most samples to use", DefaultValueFactory = _ => 32 };
        var tensors = new Option<string?>("--tensors") { Description = "comma-separated tensors to observe (default: the activation " +
            "input of every MatMul/Gemm)" };
        var noDocSplit = Cli.NoDocSplitOption();
        var force = Cli.ForceOption();
        var cmd = new Command("calibrate", "run the float model on calibration data and save activation statistics") { model, calib,
            output, seq, samples, tensors, noDocSplit, force };
        cmd.SetAction(pr =>
        {
            using var m = Cli.LoadModel(pr.GetValue(model)!);
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddModelInput(pr.GetValue(model)!, m);
            outputs.AddInput(pr.GetValue(calib));
            string staged = outputs.Add("--output", pr.GetValue(output)!, OutputKind.Stats);
            var data = DataLoader.Load(m, pr.GetValue(calib)!,
                new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = pr.GetValue(samples),
                SplitDocuments = !pr.GetValue(noDocSplit) });
            foreach (var w in data.Warnings) stderr.WriteLine($"quantc: warning: {w}");
            var names = pr.GetValue(tensors) is { } t
                ? t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList() : DefaultTensors(m);
            if (names.Count == 0)
                throw new BadInputException("nothing to calibrate: the model has no MatMul/Gemm activation inputs (name tensors with " +
                "--tensors)");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var stats = ProgressBar.Run("calibrating", p => Calibrator.Collect(m, names, data.Samples, progress: p));
            StatsFile.Save(staged, stats.Values);
            outputs.Commit();
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{stats.Count} tensors over {data.Description} in {sw.Elapsed.TotalSeconds:0.00} s → {pr.GetValue(output)}"));
            foreach (var s in stats.Values.OrderByDescending(s => s.SpikeRatio).Take(5))
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  {Cli.Printable(s.Name)}: absmax {s.AbsMax:G4}, channel outlier ratio {s.ChannelOutlierRatio:0.0}, token spike " +
                        $"ratio {s.SpikeRatio:0.0}"));
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>The input of every linear layer the model map finds (what a compile's passes ask statistics for).</summary>
    internal static List<string> DefaultTensors(Model m) =>
        Quantc.Ir.Analysis.LayerAnalysis.Analyze(m.Graph).Linears.Select(l => l.Input.Name).Distinct().ToList();
}
