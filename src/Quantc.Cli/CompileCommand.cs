using System.CommandLine;
using System.Globalization;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.IO;
using Quantc.Passes;

namespace Quantc.Cli;

/// <summary><c>quantc compile [MODEL] [-o OUT] [--recipe R] [--calib DATA] [--report R.json] [--html R.html] [--charts DIR]
/// [--no-verify]</c>.</summary>
internal static class CompileCommand
{
    public const string DefaultRecipe = "smoothquant-auto";

    public static Command Build(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string?>("model") { Description = "float ONNX model (default: the bundled tiny LLaMA)",
            Arity = ArgumentArity.ZeroOrOne };
        var output = new Option<string?>("--output", "-o") { Description = "compiled model (default: out/<model>.<recipe>.onnx)" };
        var recipe = new Option<string>("--recipe") { Description = $"built-in recipe ({string.Join(", ", Builtins.Recipes.Keys)}) or a " +
            $"YAML file", DefaultValueFactory = _ => DefaultRecipe };
        var calib = new Option<string?>("--calib") { Description = "calibration data (default: models/calib.txt for byte-tokenized " +
            "models)" };
        var samples = new Option<int>("--samples") { Description = "calibration samples", DefaultValueFactory = _ => 16 };
        var seq = new Option<int>("--seq-len") { Description = "tokens per calibration sample", DefaultValueFactory = _ => 128 };
        var report = new Option<string?>("--report") { Description = "write the JSON report here (default: next to the output)" };
        var noVerify = new Option<bool>("--no-verify") { Description = "skip the verification against the float model" };
        var verifySamples = new Option<int>("--verify-samples") { Description = "held-out samples for the verification",
            DefaultValueFactory = _ => 8 };
        var evalData = new Option<string?>("--data") { Description = "held-out data for the verification (default: models/eval.txt for " +
            "byte-tokenized models)" };
        var noAttribution = new Option<bool>("--no-attribution") { Description = "when the verified error is far above the recipe's " +
            "expectation, do not compile its parts again to tell which costs most" };
        var html = new Option<string?>("--html") { Description = "also write a self-contained HTML report" };
        var charts = new Option<string?>("--charts") { Description = "also write the report's charts as SVG files into this folder " +
            $"({string.Join(", ", Quantc.Core.Reports.CompileCharts.Names.Select(n => n + ".svg"))})" };
        var noDocSplit = Cli.NoDocSplitOption();
        var noBos = Cli.NoBosOption();
        var force = Cli.ForceOption();
        var genai = new Option<bool>("--genai") { Description = "write a folder ONNX Runtime GenAI runs (-o is the folder: model.onnx, " +
            "genai_config.json, tokenizer files; see 'quantc generate'); the default without -o for a decoder with a KV cache" };
        var noGenai = new Option<bool>("--no-genai") { Description = "without -o, write one .onnx file even for a decoder GenAI can run" };
        var statsFile = new Option<string?>("--stats") { Description = "reuse statistics saved by 'quantc calibrate' (valid for passes " +
            "that run before any rewrite)" };
        var cmd = new Command("compile", "quantize a model with a recipe; write the model, a report, and verify it against the original")
        {
            model, output, recipe, calib, samples, seq, report, noVerify, evalData, statsFile, html, verifySamples, noDocSplit, noBos,
            force, genai, noGenai, charts, noAttribution,
        };
        cmd.SetAction(pr =>
        {
            string input = pr.GetValue(model) ?? Cli.DefaultModelPath();
            string recipeSpec = pr.GetValue(recipe)!;
            var compiler = new Compiler(Builtins.Passes());
            var r = Builtins.Recipe(recipeSpec);
            var passes = compiler.Instantiate(r);
            var total = System.Diagnostics.Stopwatch.StartNew();
            var clock = new Quantc.Core.Diagnostics.StageClock();

            using var m = clock.Time("open", () => Cli.LoadModel(input));
            clock.Time("weights scan", () => Cli.RequireFiniteWeights(m, input));
            long inBytes = ModelBytes(m, input);
            var (genaiFolder, genaiNote) = GenaiOutputs.Choose(m, input, pr.GetValue(genai), pr.GetValue(noGenai),
                pr.GetValue(output) is not null);
            if (genaiNote is not null) stderr.WriteLine(Cli.Printable($"quantc: note: {genaiNote}"));
            string outPath = pr.GetValue(output) ?? Path.Combine("out", $"{Path.GetFileNameWithoutExtension(input)}.{r.Name}" +
                (genaiFolder is null ? ".onnx" : ""));
            if (genaiFolder is not null) outPath = Path.Combine(outPath, Quantc.Genai.GenaiFolder.ModelFile);

            // Every input and output is checked before any work: nothing is written until the end,
            // and then everything at once (see OutputSet).
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddModelInput(input, m);
            foreach (var f in new[] { recipeSpec, pr.GetValue(calib), pr.GetValue(evalData), pr.GetValue(statsFile) }) outputs.AddInput(f);
            string stagedModel = outputs.Add("--output", outPath, OutputKind.Model);
            if (pr.GetValue(noVerify) && pr.GetValue(evalData) is { } unused)
                throw new Quantc.Onnx.BadInputException(
                    $"--data {unused} is given, but --no-verify skips the verification that reads it: drop one");
            string reportPath = pr.GetValue(report) ?? OutputSet.Sidecar(outPath, ".report.json");
            string stagedReport = outputs.Add("--report", reportPath, OutputKind.Report);
            string? htmlPath = pr.GetValue(html);
            string? stagedHtml = htmlPath is null ? null : outputs.Add("--html", htmlPath, OutputKind.Html);
            var chartFiles = pr.GetValue(charts) is { } chartsDir ? ChartFiles.Plan(chartsDir, outputs) : null;
            string finalModel = Path.GetFullPath(outPath);
            var genaiFiles = genaiFolder is null ? null : GenaiOutputs.Plan(genaiFolder, outPath, outputs);

            long dataStarted = System.Diagnostics.Stopwatch.GetTimestamp();
            var saved = pr.GetValue(statsFile) is { } sf
                ? Quantc.Core.Calibration.StatsFile.Load(sf).ToDictionary(x => x.Name, x => x, StringComparer.Ordinal)
                : null;
            // prefix_tokens puts BOS first in the prefix it injects into the KV cache: text read with its own BOS would give the
            // model two, which changes its function before any rounding (trained LLaMA, prefixquant-w8a8: +6.8 % perplexity).
            bool prefixed = r.Steps.Any(s => s.Pass == "prefix_tokens" && s.Parameters.Values.GetValueOrDefault("detect_only") is not true);
            bool bos = !pr.GetValue(noBos) && !prefixed;
            if (prefixed && !pr.GetValue(noBos))
                stderr.WriteLine("quantc: note: the recipe's prefix_tokens puts BOS first in the KV-cache prefix: text is read without " +
                    "its own BOS (as with --no-bos)");
            LoadedData? calibration = null;
            string? calibSpec = pr.GetValue(calib) ?? DefaultText(m, "models/calib.txt");
            if (calibSpec is not null)
            {
                calibration = DataLoader.Load(m, calibSpec,
                    new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = pr.GetValue(samples),
                    SplitDocuments = !pr.GetValue(noDocSplit), Bos = bos });
                foreach (var w in calibration.Warnings) stderr.WriteLine($"quantc: warning: {w}");
            }
            // The held-out data is read now too (against the float model), so that a bad --data fails before the compile.
            LoadedData? held = null;
            if (!pr.GetValue(noVerify))
            {
                string? spec = pr.GetValue(evalData) ?? DefaultText(m, "models/eval.txt");
                // Calibrated on random data and given no --data: verified on other random inputs (another seed), so that a model
                // that loads but computes something else is still caught.
                bool randomVerify = spec is null && calibSpec == "random";
                if (randomVerify)
                {
                    spec = "random";
                    stderr.WriteLine("quantc: note: no --data: verifying on random inputs (another seed than --calib random's)");
                }
                if (spec is null) stderr.WriteLine("quantc: warning: no held-out data for verification (give --data); skipped");
                else held = DataLoader.Load(m, spec,
                    new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = pr.GetValue(verifySamples),
                    SplitDocuments = !pr.GetValue(noDocSplit), Bos = bos,
                    Seed = randomVerify ? RandomVerifySeed : new DataOptions().Seed });
            }

            clock.Add("data", System.Diagnostics.Stopwatch.GetElapsedTime(dataStarted));
            var options = new CompileOptions
            {
                Clock = clock,
                Calibration = calibration,
                SavedStatistics = saved,
                HeldOut = held,
                OutputPath = stagedModel,
                OriginalPath = input,
                OutputName = finalModel,
                Stages = ProgressBar.Stages,
            };
            using var result = compiler.Compile(m, r, passes, options);
            foreach (var w in result.Report.Warnings.Where(w => w.StartsWith("verify: ", StringComparison.Ordinal)))
                stderr.WriteLine(Cli.Printable($"quantc: warning: {w}"));
            // When the verified error is far above the recipe's expectation, the recipe's parts are compiled and verified again.
            var expected = clock.Time("attribution", () => Expected(result, input, options, !pr.GetValue(noAttribution), stderr).ToList());
            long reportStarted = System.Diagnostics.Stopwatch.GetTimestamp();
            var reportRecord = result.Report with { Warnings = [.. result.Report.Warnings, .. expected] };
            File.WriteAllText(stagedReport, reportRecord.ToJson());
            var drawn = stagedHtml is null && chartFiles is null ? null
                : Quantc.Core.Reports.CompileCharts.Build(result.Context, result.Timings);
            if (stagedHtml is not null)
                Quantc.Core.Reports.Html.Write(stagedHtml,
                    Quantc.Core.Reports.CompileHtml.Render(input, finalModel, r, result.Context, result.Timings, result.Verify,
                    held?.Description, drawn));
            chartFiles?.Write(drawn!);
            var genaiNotes = genaiFiles?.Write(m) ?? [];
            long outBytes = FileBytes(result.Saved!.ModelPath)
                + (result.Saved.ExternalDataPath is null ? 0 : FileBytes(result.Saved.ExternalDataPath));
            outputs.Commit();
            clock.Add("report", System.Diagnostics.Stopwatch.GetElapsedTime(reportStarted));
            Print(stdout, result, input, finalModel, Path.GetFullPath(reportPath), total.Elapsed, inBytes, outBytes);
            if (chartFiles is not null) stdout.WriteLine($"charts: {chartFiles.Folder} ({drawn!.Count} SVG files)");
            if (genaiFiles is not null) GenaiOutputs.Print(stdout, genaiFiles, genaiNotes);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static void Print(TextWriter stdout, CompileResult result, string input, string finalModel, string reportPath,
        TimeSpan elapsed, long inBytes, long outBytes)
    {
        var ctx = result.Context;
        var timings = result.Timings;
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{Path.GetFileName(input)} → {finalModel} with recipe {result.Recipe.Name} in {elapsed.TotalSeconds:0.0} " +
                $"s; {inBytes / 1048576.0:0.00} MiB → {outBytes / 1048576.0:0.00} MiB"));
        int passWidth = timings.Select(t => t.Pass.Length).DefaultIfEmpty(0).Max();
        foreach (var t in timings)
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {t.Pass.PadRight(passWidth)} {t.Kind,-18} {t.Elapsed.TotalMilliseconds,8:0} ms (cpu {t.Cpu.TotalMilliseconds:0} ms)  " +
                $"nodes {t.NodesBefore} " +
                $"→ {t.NodesAfter}{(t.Calibration > TimeSpan.Zero ? $"  (calibration {t.Calibration.TotalMilliseconds:0} ms)" : "")}"));
        stdout.WriteLine(StageLine(result, inBytes, outBytes));
        var layers = ctx.Plan.Layers.ToList();
        // Counted from what the output contains: a layer counts once a lowering pass turned its decisions into operators.
        stdout.WriteLine($"  {layers.Count(p => p.LoweredBy is not null)} of {layers.Count} linear layers quantized; report: {reportPath}");
        if (ctx.StatisticsReused > 0) stdout.WriteLine($"  saved statistics answered {ctx.StatisticsReused} calibration request(s)");
        foreach (var p in layers.Where(p => p.Reasons.Any(x => x.StartsWith("spike_mixed: kept", StringComparison.Ordinal))))
            stdout.WriteLine(Cli.Printable($"  {p.Name}: {p.Reasons.Last()}"));
        // Layers quantized otherwise than the recipe asked (another group size), then the layers left in float, one line per reason.
        foreach (var g in layers.SelectMany(p => p.Reasons.Where(x => x.StartsWith("quantize: group size", StringComparison.Ordinal)
                     || x.StartsWith("quantize: per_channel instead", StringComparison.Ordinal)).Select(x => (Reason: x, p.Name)))
                     .GroupBy(x => x.Reason))
            stdout.WriteLine(Cli.Printable($"  {Layers(g.Count())}: {g.Key}: {LayerNames.Shorten(g.Select(x => x.Name))}"));
        foreach (var g in layers.Where(p => p.LoweredBy is null)
                     .GroupBy(p => p.WeightFormat.IsReduced || p.ActivationFormat.IsReduced
                         ? $"decided {p}, but no pass of the recipe lowered it"
                         : p.Reasons.LastOrDefault(x => x.Contains("kept", StringComparison.Ordinal))
                         ?? p.Reasons.LastOrDefault() ?? "no pass of the recipe quantized it"))
            stdout.WriteLine(Cli.Printable($"  {Layers(g.Count())} {(g.Count() == 1 ? "stays" : "stay")} float " +
                $"({g.Key}): {LayerNames.Shorten(g.Select(p => p.Name))}"));
        foreach (var n in ctx.Notices) stdout.WriteLine(Cli.Printable($"  {n}"));
        if (result.Verify is { } verify)
        {
            var logits = verify.Outputs.FirstOrDefault(o => o.Name == "logits") ?? verify.Outputs[0];
            string next = verify.Logits is { } l
                ? string.Create(CultureInfo.InvariantCulture,
                    $", top-1 agreement {l.Top1Agreement:P1}, perplexity {l.OriginalPerplexity:0.000} → {l.CompiledPerplexity:0.000}")
                : "";
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"verify on {result.Verify.Samples} held-out samples ({result.Report.Verify!.Data}; --verify-samples to " +
                $"change): {Cli.Printable(logits.Name)} SQNR {ReportNumberConverter.Db(logits.SqnrDb)} dB, " +
                $"cosine {logits.Cosine:0.0000}{next}"));
        }
    }

    /// <summary>
    /// The compile's stages in one line: wall (and process CPU) time of each (<see cref="CompileResult.Clock"/>), the passes' calibration
    /// runs and housekeeping, the rates of the weights scan (every input byte read) and of the write, and the peak resident set.
    /// </summary>
    internal static string StageLine(CompileResult result, long inBytes, long outBytes)
    {
        var clock = result.Clock;
        var calibration = TimeSpan.FromTicks(result.Timings.Sum(t => t.Calibration.Ticks));
        var housekeeping = TimeSpan.FromTicks(result.Timings.Sum(t => t.Housekeeping.Ticks));
        var parts = new List<string>();
        foreach (var name in clock.Stages.Select(s => s.Stage).Distinct())
        {
            var t = clock.Of(name);
            string extra = name switch
            {
                "weights scan" => Rate(inBytes, t),
                "write" => Rate(outBytes, t),
                "passes" => string.Create(CultureInfo.InvariantCulture,
                    $" (calibration {calibration.TotalSeconds:0.00} s, housekeeping {housekeeping.TotalSeconds:0.00} s)"),
                _ => "",
            };
            var cpu = clock.CpuOf(name);
            string cpuNote = cpu > TimeSpan.Zero ? string.Create(CultureInfo.InvariantCulture, $" cpu {cpu.TotalSeconds:0.00} s") : "";
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{name} {t.TotalSeconds:0.00} s{cpuNote}{extra}"));
        }
        long peak = clock.Stages.Select(s => s.PeakRssBytes).DefaultIfEmpty(0).Max();
        return $"  stages: {string.Join(", ", parts)}; peak RSS {peak >> 20} MiB";
    }

    private static string Rate(long bytes, TimeSpan t) => string.Create(CultureInfo.InvariantCulture,
        $" ({bytes / 1e6:0} MB, {(t > TimeSpan.Zero ? bytes / 1e6 / t.TotalSeconds : 0):0} MB/s)");

    /// <summary>
    /// When the verified error is far above the recipe's expectation: that warning and, with <paramref name="attribute"/>, which part
    /// of the recipe costs most (the recipe's parts compiled again in turn; see <see cref="Expectations.Attribute"/>).
    /// </summary>
    private static IEnumerable<string> Expected(CompileResult result, string input, CompileOptions options, bool attribute,
        TextWriter stderr)
    {
        if (result.Verify is not { } v || v.NonFinite().Count > 0 || Expectations.Miss(result.Recipe, v) is not { } miss) yield break;
        stderr.WriteLine(Cli.Printable($"quantc: warning: verify: {miss.Text}"));
        yield return $"verify: {miss.Text}";
        if (!attribute) yield break;
        stderr.WriteLine("quantc: note: compiling the recipe's parts again to find which costs most (--no-attribution to skip)");
        int lowered = result.Context.Plan.Layers.Count(p => p.LoweredBy is not null);
        string parts = Expectations.Attribute(result.Recipe, input, options, v, lowered, miss.Perplexity);
        stderr.WriteLine(Cli.Printable($"quantc: warning: verify: {parts}"));
        yield return $"verify: {parts}";
    }

    /// <summary>The seed of the random held-out inputs (different from the calibration's default seed).</summary>
    private const int RandomVerifySeed = 1_000_003;

    private static string Layers(int n) => n == 1 ? "1 layer" : $"{n} layers";

    private static long FileBytes(string p) => File.Exists(p) ? new FileInfo(p).Length : 0;

    /// <summary>The model file and every external-data file its initializers name (each counted once).</summary>
    private static long ModelBytes(Quantc.Ir.Model m, string path) => FileBytes(path) + (m.File?.ExternalFiles.Sum(f => f.Length) ?? 0);

    /// <summary>The bundled text for models that use the byte-level tokenizer, else null.</summary>
    private static string? DefaultText(Quantc.Ir.Model m, string rel)
    {
        try
        {
            if (DataLoader.TokenizerFor(m) is not ByteTokenizer) return null;
        }
        catch (Quantc.Onnx.BadInputException) { return null; }
        return Cli.TryFindBundled(rel);
    }
}
