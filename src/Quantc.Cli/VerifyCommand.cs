using System.CommandLine;
using System.Globalization;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.IO;
using Quantc.Core.Runtime;
using Quantc.Core.Verification;

namespace Quantc.Cli;

/// <summary><c>quantc verify ORIGINAL COMPILED [--data DATA] [--min-sqnr DB] [--max-ppl-increase X] [--json] [--ep cpu|cuda]</c>.</summary>
internal static class VerifyCommand
{
    public static Command Build(TextWriter stdout, TextWriter stderr)
    {
        var original = new Argument<string>("original") { Description = "the float model" };
        var compiled = new Argument<string>("compiled") { Description = "the compiled (quantized) model" };
        var data = new Option<string?>("--data") { Description = "held-out data: text, token ids (.npy/.jsonl), inputs (.npz or a folder " +
            "of them), or 'random' (default: the bundled evaluation text for byte-tokenized models)" };
        var seq = new Option<int>("--seq-len") { Description = "tokens per sample for text/ids", DefaultValueFactory = _ => 128 };
        var samples = new Option<int>("--samples") { Description = "most samples to use", DefaultValueFactory = _ => 16 };
        var minSqnr = new Option<double?>("--min-sqnr") { Description = "fail (exit 1) when any output's SQNR is below this many dB" };
        var maxPpl = new Option<double?>("--max-ppl-increase") { Description = "fail (exit 1) when perplexity rises by more than this " +
            "factor minus one (e.g. 0.05 = 5%)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var noLayers = new Option<bool>("--no-layers") { Description = "skip per-layer localisation" };
        var html = new Option<string?>("--html") { Description = "also write a self-contained HTML report with a per-layer error chart" };
        var exact = new Option<bool>("--exact") { Description = "also evaluate the original in float64 and compare both models with it: " +
            "the float32 original's own error is the noise floor (standard ONNX ops only)" };
        var noDocSplit = Cli.NoDocSplitOption();
        var noBos = Cli.NoBosOption();
        var force = Cli.ForceOption();
        var ep = new Option<string>("--ep") { Description = "where both models run: cpu, or cuda (ONNX Runtime's CUDA provider: the GPU " +
            "package, -p:QuantcOrtGpu=true, and libquantc_ops's CUDA kernels)", DefaultValueFactory = _ => "cpu" };
        ep.AcceptOnlyFromAmong("cpu", "cuda");
        var cmd = new Command("verify", "run both models on held-out data; report error per output and per layer") { original, compiled,
            data, seq, samples, minSqnr, maxPpl, json, noLayers, html, exact, noDocSplit, noBos, force, ep };
        cmd.SetAction(pr =>
        {
            using var target = OnProvider(pr.GetValue(ep) == "cuda", stderr);
            CheckThreshold("--min-sqnr", pr.GetValue(minSqnr));
            CheckThreshold("--max-ppl-increase", pr.GetValue(maxPpl));
            using var a = Cli.LoadModel(pr.GetValue(original)!);
            using var b = Cli.LoadModel(pr.GetValue(compiled)!);
            string spec = pr.GetValue(data) ?? Cli.DefaultEvalText();
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddModelInput(pr.GetValue(original)!, a);
            outputs.AddModelInput(pr.GetValue(compiled)!, b);
            outputs.AddInput(spec);
            string? stagedHtml = pr.GetValue(html) is { } htmlPath ? outputs.Add("--html", htmlPath, OutputKind.Html) : null;
            // A model compiled with prefix_tokens carries BOS first in its KV-cache prefix: text read with its own BOS would give it
            // two (what compile's verify avoids the same way).
            bool prefixed = b.Metadata.Any(kv => kv.Key == Quantc.Genai.DecoderShape.PrefixTokensKey && kv.Value.Length > 0);
            if (prefixed && !pr.GetValue(noBos))
                stderr.WriteLine($"quantc: note: {pr.GetValue(compiled)} carries a KV-cache prefix that starts with BOS (prefix_tokens): " +
                    "text is read without its own BOS (as with --no-bos)");
            var loaded = DataLoader.Load(a, spec,
                new DataOptions { SequenceLength = pr.GetValue(seq), MaxSamples = pr.GetValue(samples),
                SplitDocuments = !pr.GetValue(noDocSplit), Bos = !pr.GetValue(noBos) && !prefixed });
            foreach (var w in loaded.Warnings) stderr.WriteLine($"quantc: warning: {w}");
            if (pr.GetValue(maxPpl) is not null && (loaded.Tokens is null || !a.Graph.Outputs.Any(o => o.Name == "logits")))
                throw new Quantc.Onnx.BadInputException("--max-ppl-increase needs token data (text or token ids) and a model with a " +
                    "'logits' output");
            var outcome = ModelVerifier.Run(a, b, loaded, new VerifyThresholds(pr.GetValue(minSqnr), pr.GetValue(maxPpl)),
                perLayer: !pr.GetValue(noLayers), exactReferencePath: pr.GetValue(exact) ? pr.GetValue(original)! : null,
                    stages: ProgressBar.Stages);
            if (stagedHtml is not null)
            {
                Quantc.Core.Reports.Html.Write(stagedHtml,
                    Quantc.Core.Reports.VerifyHtml.Render(outcome.Report, pr.GetValue(original)!, pr.GetValue(compiled)!, outcome.Data,
                    outcome.Failures));
                outputs.Commit();
            }
            if (pr.GetValue(json)) stdout.Write(outcome.ToJson());
            else Render(outcome.Report, outcome.Data, outcome.Failures, stdout);
            return outcome.Passed ? ExitCodes.Ok : ExitCodes.ChecksFailed;
        });
        return cmd;
    }

    /// <summary>
    /// For the command's duration, quantc's sessions on the CUDA provider (<paramref name="cuda"/>): bad input when it cannot start
    /// here (the reason in one line); a warning when libquantc_ops has no CUDA kernels (its ops then run on the CPU).
    /// </summary>
    private static IDisposable OnProvider(bool cuda, TextWriter stderr)
    {
        if (!cuda) return new ProviderScope(OrtModel.Provider);
        if (Cuda.Unavailable is { } why) throw new Quantc.Onnx.BadInputException($"--ep cuda: {why}");
        if (!Cuda.LibraryHasKernels)
            stderr.WriteLine("quantc: warning: --ep cuda: libquantc_ops was built without its CUDA kernels (no nvcc): ai.quantc ops " +
                "run on the CPU");
        var scope = new ProviderScope(OrtModel.Provider);
        OrtModel.Provider = ExecutionTarget.Cuda;
        return scope;
    }

    private sealed class ProviderScope(ExecutionTarget saved) : IDisposable
    {
        public void Dispose() => OrtModel.Provider = saved;
    }

    /// <summary>A gate's threshold must be a finite number, 0 or more (NaN would pass everything).</summary>
    private static void CheckThreshold(string option, double? value)
    {
        if (value is { } v && !(double.IsFinite(v) && v >= 0))
            throw new Quantc.Onnx.BadInputException(string.Create(CultureInfo.InvariantCulture,
                $"{option} must be a finite number, 0 or more (got {v})"));
    }

    private static void Render(VerifyReport r, string data, IReadOnlyList<string> failures, TextWriter o)
    {
        o.WriteLine(Cli.Printable($"data: {data}"));
        bool exact = r.Outputs.Any(x => x.SqnrVsExactDb is not null);
        o.WriteLine($"{"output",-32} {"SQNR dB",9} {"cosine",10} {"max |err|",12}"
            + (exact ? $" {"vs exact dB",12} {"fp32 noise dB",14}" : ""));
        foreach (var x in r.Outputs)
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Trim(Cli.Printable(x.Name), 32),-32} {ReportNumberConverter.Db(x.SqnrDb),9} {x.Cosine,10:0.000000} " +
                $"{x.MaxAbsError,12:0.####E+0}")
                + (exact ? $" {ReportNumberConverter.Db(x.SqnrVsExactDb ?? double.NaN),12} " +
                    $"{ReportNumberConverter.Db(x.OriginalNoiseSqnrDb ?? double.NaN),14}" : ""));
        if (exact)
            o.WriteLine("vs exact: the compiled model against the original evaluated in float64; fp32 noise: the float32 original " +
                "against the same — " +
                "a compiled model as close to the exact function as the original is differs from it only by float32 rounding");
        if (r.Logits is { } l)
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"top-1 agreement {l.Top1Agreement:P2}; perplexity {l.OriginalPerplexity:0.000} → {l.CompiledPerplexity:0.000} " +
                $"over {l.ScoredTokens} tokens"));
        if (r.Greedy is { } gm)
            o.WriteLine($"greedy decoding from token {gm.Start}: {gm.Matching} of {gm.Steps} generated tokens match the original's " +
                $"before the first divergence");
        if (r.Layers.Count > 0)
        {
            o.WriteLine();
            o.WriteLine($"per layer ({r.Layers.Count} tensors mapped, in graph order):");
            o.WriteLine($"{"tensor",-56} {"op",-14} {"SQNR dB",9} {"cosine",10}");
            foreach (var x in r.Layers)
                o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{Trim(Cli.Printable(x.CompiledName), 56),-56} {Trim(Cli.Printable(x.Op), 14),-14} " +
                    $"{ReportNumberConverter.Db(x.SqnrDb),9} {x.Cosine,10:0.000000}"));
        }
        foreach (var n in r.NonFinite().Except(failures)) o.WriteLine(Cli.Printable($"NOT FINITE: {n}"));
        foreach (var f in failures) o.WriteLine(Cli.Printable($"FAILED: {f}"));
    }

    private static string Trim(string s, int n) => s.Length <= n ? s : "…" + s[^(n - 1)..];
}
