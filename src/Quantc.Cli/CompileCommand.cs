using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Quantc.Core.Data;
using Quantc.Core.IO;
using Quantc.Core.Runtime;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Passes;

namespace Quantc.Cli;

/// <summary><c>quantc compile [MODEL] [-o OUT] [--recipe R] [--calib DATA] [--report R.json] [--no-verify]</c>.</summary>
internal static class CompileCommand
{
    public const string DefaultRecipe = "smoothquant-auto";

    public static Command Build(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string?>("model") { Description = "float ONNX model (default: the bundled tiny LLaMA)", Arity = ArgumentArity.ZeroOrOne };
        var output = new Option<string?>("--output", "-o") { Description = "compiled model (default: out/<model>.<recipe>.onnx)" };
        var recipe = new Option<string>("--recipe") { Description = $"built-in recipe ({string.Join(", ", Builtins.Recipes.Keys)}) or a YAML file", DefaultValueFactory = _ => DefaultRecipe };
        var calib = new Option<string?>("--calib") { Description = "calibration data (default: models/calib.txt for byte-tokenized models)" };
        var samples = new Option<int>("--samples") { Description = "calibration samples", DefaultValueFactory = _ => 16 };
        var seq = new Option<int>("--seq-len") { Description = "tokens per calibration sample", DefaultValueFactory = _ => 128 };
        var report = new Option<string?>("--report") { Description = "write the JSON report here (default: next to the output)" };
        var noVerify = new Option<bool>("--no-verify") { Description = "skip the verification against the float model" };
        var evalData = new Option<string?>("--data") { Description = "held-out data for the verification (default: models/eval.txt for byte-tokenized models)" };
        var html = new Option<string?>("--html") { Description = "also write a self-contained HTML report" };
        var force = Cli.ForceOption();
        var statsFile = new Option<string?>("--stats") { Description = "reuse statistics saved by 'quantc calibrate' (valid for passes that run before any rewrite)" };
        var cmd = new Command("compile", "quantize a model with a recipe; write the model, a report, and verify it against the original")
            { model, output, recipe, calib, samples, seq, report, noVerify, evalData, statsFile, html, force };
        cmd.SetAction(pr =>
        {
            string input = pr.GetValue(model) ?? Cli.DefaultModelPath();
            string recipeSpec = pr.GetValue(recipe)!;
            var r = Builtins.Recipe(recipeSpec);
            var passes = new PassManager(Builtins.Passes()).Instantiate(r);
            string outPath = pr.GetValue(output) ?? Path.Combine("out", $"{Path.GetFileNameWithoutExtension(input)}.{r.Name}.onnx");
            var total = System.Diagnostics.Stopwatch.StartNew();

            using var m = Cli.LoadModel(input);
            Cli.RequireFiniteWeights(m, input);
            long inBytes = ModelBytes(m, input);

            // Every input and output is checked before any work: nothing is written until the end,
            // and then everything at once (see OutputSet).
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddModelInput(input, m);
            foreach (var f in new[] { recipeSpec, pr.GetValue(calib), pr.GetValue(evalData), pr.GetValue(statsFile) }) outputs.AddInput(f);
            string stagedModel = outputs.Add("--output", outPath, OutputKind.Model);
            string reportPath = pr.GetValue(report) ?? Path.ChangeExtension(outPath, ".report.json");
            string stagedReport = outputs.Add("--report", reportPath, OutputKind.Report);
            string? htmlPath = pr.GetValue(html);
            string? stagedHtml = htmlPath is null ? null : outputs.Add("--html", htmlPath, OutputKind.Html);
            string finalModel = Path.GetFullPath(outPath);

            var ctx = new PassContext(m);
            var warnings = new List<string>();
            if (pr.GetValue(statsFile) is { } sf)
                ctx.SavedStatistics = Quantc.Core.Calibration.StatsFile.Load(sf).ToDictionary(x => x.Name, x => x, StringComparer.Ordinal);
            string? calibSpec = pr.GetValue(calib) ?? DefaultText(m, "models/calib.txt");
            if (calibSpec is not null)
            {
                var data = DataLoader.Load(m, calibSpec, new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = pr.GetValue(samples) });
                foreach (var w in data.Warnings) { stderr.WriteLine($"quantc: warning: {w}"); warnings.Add(w); }
                ctx.CalibrationData = data.Samples;
            }
            // The held-out data is read now too (against the float model), so that a bad --data fails before the compile.
            LoadedData? held = null;
            if (!pr.GetValue(noVerify))
            {
                string? spec = pr.GetValue(evalData) ?? DefaultText(m, "models/eval.txt");
                if (spec is null) stderr.WriteLine("quantc: warning: no held-out data for verification (give --data); skipped");
                else held = DataLoader.Load(m, spec, new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = 8 });
            }

            var timings = ProgressBar.Run($"compiling ({r.Name})", p => new PassManager(Builtins.Passes()).Run(passes, ctx, p));
            m.SetMetadata("quantc.recipe", r.Name);
            var saved = m.Save(stagedModel);
            if (OrtModel.LoadError(saved.ModelPath, CustomOps.IsUsedBy(m)) is { } loadError)
                throw new InvalidOperationException($"the compiled model does not load in ONNX Runtime ({loadError}); nothing was written");

            VerifyReport? verify = null;
            string? verifyData = held?.Description;
            if (held is not null)
            {
                using var original = Cli.LoadModel(input);
                using var compiled = Cli.LoadModel(saved.ModelPath);
                verify = ProgressBar.Run("verifying", p => Verifier.Run(original, compiled, held.Samples, held.Tokens, new VerifyOptions { PerLayer = false }, p));
                foreach (var n in verify.NonFinite()) { stderr.WriteLine(Cli.Printable($"quantc: warning: verify: {n}")); warnings.Add($"verify: {n}"); }
            }
            File.WriteAllText(stagedReport, ReportJson(input, finalModel, r, ctx, timings, verify, verifyData, warnings));
            if (stagedHtml is not null)
                Quantc.Core.Reports.Html.Write(stagedHtml, Quantc.Core.Reports.CompileHtml.Render(input, finalModel, r, ctx, timings, verify, verifyData));
            long outBytes = FileBytes(saved.ModelPath) + (saved.ExternalDataPath is null ? 0 : FileBytes(saved.ExternalDataPath));
            outputs.Commit();
            reportPath = Path.GetFullPath(reportPath);

            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Path.GetFileName(input)} → {finalModel} with recipe {r.Name} in {total.Elapsed.TotalSeconds:0.0} s; {inBytes / 1048576.0:0.00} MiB → {outBytes / 1048576.0:0.00} MiB"));
            int passWidth = timings.Select(t => t.Pass.Length).DefaultIfEmpty(0).Max();
            foreach (var t in timings)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {t.Pass.PadRight(passWidth)} {t.Kind,-18} {t.Elapsed.TotalMilliseconds,8:0} ms  nodes {t.NodesBefore} → {t.NodesAfter}"));
            var layers = ctx.Plan.Layers.ToList();
            stdout.WriteLine($"  {layers.Count(p => p.WeightFormat != "fp32" || p.ActivationFormat != "fp32")} of {layers.Count} linear layers quantized; report: {reportPath}");
            if (ctx.StatisticsReused > 0) stdout.WriteLine($"  saved statistics answered {ctx.StatisticsReused} calibration request(s)");
            foreach (var p in layers.Where(p => p.Reasons.Any(x => x.StartsWith("spike_mixed: kept", StringComparison.Ordinal))))
                stdout.WriteLine(Cli.Printable($"  {p.Name}: {p.Reasons.Last()}"));
            if (verify is not null)
            {
                var logits = verify.Outputs.FirstOrDefault(o => o.Name == "logits") ?? verify.Outputs[0];
                string next = verify.Logits is { } l
                    ? string.Create(CultureInfo.InvariantCulture, $", top-1 agreement {l.Top1Agreement:P1}, perplexity {l.OriginalPerplexity:0.000} → {l.CompiledPerplexity:0.000}")
                    : "";
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"verify ({verifyData}): {Cli.Printable(logits.Name)} SQNR {VerifyCommand.Db(logits.SqnrDb)} dB, cosine {logits.Cosine:0.0000}{next}"));
            }
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static long FileBytes(string p) => File.Exists(p) ? new FileInfo(p).Length : 0;

    /// <summary>The model file and every external-data file its initializers name (each counted once).</summary>
    private static long ModelBytes(Quantc.Ir.Model m, string path)
    {
        return FileBytes(path) + (m.File?.ExternalFiles.Sum(f => f.Length) ?? 0);
    }

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

    private static string ReportJson(string input, string output, Recipe r, PassContext ctx, IReadOnlyList<PassTiming> timings, VerifyReport? verify, string? verifyData, IReadOnlyList<string> warnings)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("generator", "quantc");
            w.WriteString("input", input);
            w.WriteString("output", output);
            w.WriteString("recipe", r.Name);
            w.WriteString("recipe_description", r.Description);
            w.WriteStartArray("warnings");
            foreach (var x in warnings) w.WriteStringValue(x);
            w.WriteEndArray();
            w.WriteStartArray("passes");
            foreach (var t in timings)
            {
                w.WriteStartObject();
                w.WriteString("pass", t.Pass);
                w.WriteString("kind", t.Kind.ToString());
                w.WriteNumber("ms", Math.Round(t.Elapsed.TotalMilliseconds, 1));
                w.WriteNumber("nodes_before", t.NodesBefore);
                w.WriteNumber("nodes_after", t.NodesAfter);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("layers");
            foreach (var p in ctx.Plan.Layers)
            {
                w.WriteStartObject();
                w.WriteString("name", p.Name);
                w.WriteString("summary", p.ToString());
                w.WriteString("weights", p.WeightFormat);
                w.WriteString("granularity", p.WeightGranularity);
                if (p.GroupSize > 0) w.WriteNumber("group_size", p.GroupSize);
                w.WriteString("weight_method", p.WeightMethod);
                w.WriteString("activations", p.ActivationFormat);
                w.WriteString("activation_mode", p.ActivationMode);
                if (p.ActivationRange is { } range)
                {
                    w.WriteStartArray("activation_range");
                    w.WriteNumberValue(range.Lo);
                    w.WriteNumberValue(range.Hi);
                    w.WriteEndArray();
                    w.WriteString("range_method", p.RangeMethod);
                }
                w.WriteStartArray("transforms");
                foreach (var t in p.Transforms) w.WriteStringValue(t);
                w.WriteEndArray();
                w.WriteStartArray("reasons");
                foreach (var t in p.Reasons) w.WriteStringValue(t);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("log");
            foreach (var l in ctx.Log) w.WriteStringValue(l);
            w.WriteEndArray();
            if (verify is not null)
            {
                w.WriteStartObject("verify");
                w.WriteString("data", verifyData);
                foreach (var o in verify.Outputs.Where(o => o.Name == "logits").DefaultIfEmpty(verify.Outputs[0]))
                {
                    w.WriteString("output", o!.Name);
                    VerifyCommand.Num(w, "sqnr_db", o.SqnrDb);
                    VerifyCommand.Num(w, "cosine", o.Cosine);
                }
                if (verify.Logits is { } l)
                {
                    VerifyCommand.Num(w, "top1_agreement", l.Top1Agreement);
                    VerifyCommand.Num(w, "perplexity_original", l.OriginalPerplexity);
                    VerifyCommand.Num(w, "perplexity_compiled", l.CompiledPerplexity);
                }
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }
}
