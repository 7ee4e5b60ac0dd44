// Two benchmarks for models nobody here exported.
//
//   corpus [--filter TEXT]     quantc compile MODEL --recipe w8a8 --calib random (in process, exactly the CLI) for every model of ONNX's
//                              backend-test corpus that has a MatMul, Gemm or Conv; each outcome: compiled and verified (exit 0,
//                              the written model loads in ONNX Runtime again), refused with a reason (exit 2), verify failed (exit 1),
//                              failed (exit 3, or exit 0 with an output ONNX Runtime does not load). Prints a markdown table.
//   export NAME OUT [--size N] writes an exporter-like graph (Quantc.Models.ExportedGraphs: cnn-bn, paddle-encoder, dw-separable;
//                              Quantc.Models.VisionGraphs: upsample-net, resnet-wide).
//   latency MODEL... [--rounds R] [--threads T]
//                              ONNX Runtime CPU latency of each model on one random input, interleaved rounds after warm-up (the
//                              first model is the basis of the speed-ups), and the main ops of ORT's optimised graph.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Ir;

var inv = CultureInfo.InvariantCulture;
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: corpus [--filter TEXT] | export NAME OUT [--size N] | latency MODEL...");
    return 2;
}
switch (args[0])
{
    case "corpus": return Corpus(args.Skip(1).ToArray());
    case "export":
    {
        int size = args.Length > 4 && args[3] == "--size" ? int.Parse(args[4], inv) : 32;
        using var m = Quantc.Models.VisionGraphs.Names.Contains(args[1])
            ? Quantc.Models.VisionGraphs.Build(args[1], imageSize: size) : Quantc.Models.ExportedGraphs.Build(args[1], imageSize: size);
        m.Save(args[2]);
        Console.WriteLine($"{args[1]} ({size}²) → {args[2]}");
        return 0;
    }
    case "latency": return Latency(args.Skip(1).ToArray());
    default: Console.Error.WriteLine($"unknown mode {args[0]}"); return 2;
}

static int Corpus(string[] args)
{
    const string root = "/usr/share/libonnx-testdata/data";
    string? filter = args.Length > 1 && args[0] == "--filter" ? args[1] : null;
    var models = Directory.GetFiles(root, "model.onnx", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
        .Where(p => filter is null || p.Contains(filter, StringComparison.Ordinal)).ToList();
    var dir = Directory.CreateTempSubdirectory("quantc-corpus-w8a8");
    var outcomes = new List<(string Model, string Outcome, string Detail)>();
    var total = Stopwatch.StartNew();
    foreach (var path in models)
    {
        string name = Path.GetRelativePath(root, Path.GetDirectoryName(path)!);
        using (var m = Model.Load(path))
            if (!m.Graph.AllNodes().Any(n => n.OpType is "MatMul" or "Gemm" or "Conv" or "ConvTranspose")) continue;
        string output = Path.Combine(dir.FullName, name.Replace('/', '_') + ".w8a8.onnx");
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Quantc.Cli.Cli.Run(["compile", path, "--recipe", "w8a8", "--calib", "random", "-o", output, "--force"], o, e);
        string err = e.ToString().Split('\n').FirstOrDefault(l => l.StartsWith("quantc: error", StringComparison.Ordinal)
            || l.StartsWith("quantc: internal", StringComparison.Ordinal)) ?? "";
        string outcome = code switch
        {
            0 when LoadError(output) is { } bad => "failed (invalid output)",
            0 => o.ToString().Contains("verify on ", StringComparison.Ordinal) ? "compiled and verified" : "compiled (no verify)",
            1 => "verify failed",
            2 => "refused",
            _ => "failed (internal error)",
        };
        string detail = code == 0 ? $"{Layers(o.ToString())}; {Sqnr(o.ToString())}" : err;
        if (outcome == "compiled and verified") outcome += Layers(o.ToString()).StartsWith("0 of", StringComparison.Ordinal)
            ? " (no layer: weights are graph inputs)" : " (layers quantized)";
        outcomes.Add((name, outcome, detail));
        Console.Error.WriteLine($"{name}: {outcome} {detail}");
        foreach (var f in Directory.GetFiles(dir.FullName)) File.Delete(f);
    }
    dir.Delete(recursive: true);
    Console.WriteLine($"quantc compile MODEL --recipe w8a8 --calib random over the {outcomes.Count} backend-test corpus models (of " +
        $"{models.Count}) with a MatMul, Gemm or Conv ({total.Elapsed.TotalSeconds:0} s):");
    Console.WriteLine();
    Console.WriteLine("| outcome | models |");
    Console.WriteLine("|---|---|");
    foreach (var g in outcomes.GroupBy(x => x.Outcome).OrderByDescending(g => g.Count())) Console.WriteLine($"| {g.Key} | {g.Count()} |");
    Console.WriteLine();
    Console.WriteLine("| refusal reason (model opset / op named in it elided) | models | e.g. |");
    Console.WriteLine("|---|---|---|");
    foreach (var g in outcomes.Where(x => x.Outcome == "refused").GroupBy(x => Generalize(x.Detail)).OrderByDescending(g => g.Count()))
        Console.WriteLine($"| {g.Key.Replace("|", "\\|", StringComparison.Ordinal)} | {g.Count()} | {g.First().Model} |");
    foreach (var x in outcomes.Where(x => x.Outcome.StartsWith("failed", StringComparison.Ordinal) || x.Outcome == "verify failed"))
        Console.WriteLine($"- {x.Model}: {x.Outcome}: {x.Detail}");
    return outcomes.Any(x => x.Outcome.StartsWith("failed", StringComparison.Ordinal)) ? 1 : 0;
}

static string? LoadError(string path)
{
    try
    {
        using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        using var s = new InferenceSession(path, so);
        return null;
    }
    catch (OnnxRuntimeException ex) { return ex.Message; }
}

static string Sqnr(string stdout)
{
    int i = stdout.IndexOf(" SQNR ", StringComparison.Ordinal);
    if (i < 0) return "";
    int j = stdout.IndexOf(" dB", i, StringComparison.Ordinal);
    return j < 0 ? "" : "SQNR" + stdout[(i + 5)..j] + " dB";
}

static string Layers(string stdout)
{
    var m = System.Text.RegularExpressions.Regex.Match(stdout, @"(\d+) of (\d+) linear layers quantized");
    return m.Success ? m.Value : "";
}

static string Generalize(string reason) =>
    System.Text.RegularExpressions.Regex.Replace(reason.Replace("quantc: error: ", "", StringComparison.Ordinal), "'[^']*'", "'…'");

static int Latency(string[] args)
{
    var inv = CultureInfo.InvariantCulture;
    int rounds = 15, threads = 0;
    var paths = new List<string>();
    for (int i = 0; i < args.Length; i++)
    {
        if (args[i] == "--rounds") rounds = int.Parse(args[++i], inv);
        else if (args[i] == "--threads") threads = int.Parse(args[++i], inv);
        else paths.Add(args[i]);
    }
    var runs = new List<(string Path, InferenceSession S, List<(string, OrtValue)> Feed, List<double> Ms, string Ops)>();
    foreach (var p in paths)
    {
        using var m = Model.Load(p);
        var sample = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 1 }).Samples[0];
        string opt = p + ".ort-optimized.onnx";   // beside the model: it may name the model's external data file
        var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = opt };
        if (threads > 0) so.IntraOpNumThreads = threads;
        var s = new InferenceSession(p, so);
        string ops;
        using (var om = Model.Load(opt))
            ops = string.Join(", ", om.Graph.Nodes.GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).Take(6)
                .Select(g => $"{g.Key} {g.Count()}"));
        File.Delete(opt);
        runs.Add((p, s, CalibrationInputs.ToOrt(sample), [], ops));
    }
    double Once((string Path, InferenceSession S, List<(string, OrtValue)> Feed, List<double> Ms, string Ops) r)
    {
        using var ro = new RunOptions();
        var sw = Stopwatch.StartNew();
        using var outs = r.S.Run(ro, r.Feed.Select(f => f.Item1).ToList(), r.Feed.Select(f => f.Item2).ToList(), r.S.OutputNames);
        return sw.Elapsed.TotalMilliseconds;
    }
    foreach (var r in runs) for (int i = 0; i < 5; i++) Once(r);
    for (int round = 0; round < rounds; round++)
        foreach (var r in runs)
        {
            double t = 0;
            for (int i = 0; i < 10; i++) t += Once(r);
            r.Ms.Add(t / 10);
        }
    static double Med(IEnumerable<double> xs)
    {
        var t = xs.OrderBy(x => x).ToList();
        return t.Count % 2 == 1 ? t[t.Count / 2] : (t[t.Count / 2 - 1] + t[t.Count / 2]) / 2;
    }
    string threadText = threads > 0 ? threads.ToString(inv) : "ORT default";
    Console.WriteLine(string.Create(inv, $"{rounds} interleaved rounds of 10 runs, intra-op threads {threadText}"));
    Console.WriteLine();
    Console.WriteLine("| model | file KiB | ms per run, median (min) | speed-up (median of paired rounds) | " +
        "ORT's optimised graph: main ops |");
    Console.WriteLine("|---|---|---|---|---|");
    var basis = runs[0];
    foreach (var r in runs)
    {
        double sp = Med(r.Ms.Select((t, i) => basis.Ms[i] / t));
        Console.WriteLine(string.Create(inv, $"| {Path.GetFileName(r.Path)} | {new FileInfo(r.Path).Length / 1024.0:0} | " +
            $"{Med(r.Ms):0.000} ({r.Ms.Min():0.000}) | {sp:0.00}× | {r.Ops} |"));
    }
    return 0;
}
