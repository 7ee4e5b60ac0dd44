// Latency of models in ONNX Runtime CPU: prefill of N tokens (empty KV cache) and one decode step
// (one token after N cached), median of timed runs after warm-up; plus the op histogram of the graph
// ONNX Runtime actually runs (its optimised model), to see what the QDQ was fused into.
// Usage: dotnet run -c Release -- MODEL.onnx [MODEL2.onnx ...] [--tokens 512] [--profile]
// --profile: also runs each prefill under ONNX Runtime's profiler and prints where the time goes, per op type.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;

var inv = CultureInfo.InvariantCulture;
int tokens = 512;
bool profile = false;
var models = new List<string>();
var profiles = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--tokens") tokens = int.Parse(args[++i], inv);
    else if (args[i] == "--profile") profile = true;
    else models.Add(args[i]);
}

double Median(Action run, int reps)
{
    run(); run();
    var t = new List<double>();
    var budget = Stopwatch.StartNew();
    for (int i = 0; i < reps && (i < 3 || budget.Elapsed.TotalSeconds < 20); i++)
    {
        var sw = Stopwatch.StartNew();
        run();
        t.Add(sw.Elapsed.TotalMilliseconds);
    }
    t.Sort();
    return t[t.Count / 2];
}

Console.WriteLine($"| model | file MiB | prefill {tokens} ms | decode ms | ORT's optimised graph: main ops |");
Console.WriteLine("|---|---|---|---|---|");
foreach (var path in models)
{
    using var ir = Model.Load(path);
    var inputs = ir.Graph.Inputs.Where(v => !v.IsInitializer).ToList();
    string optimized = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".opt-{Guid.NewGuid():N}.onnx");
    using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
    if (Quantc.Core.Runtime.CustomOps.IsUsedBy(ir)) Quantc.Core.Runtime.CustomOps.Register(so);
    using var session = new InferenceSession(path, so);
    string ops;
    using (var opt = Model.Load(optimized))
        ops = string.Join(", ", opt.Graph.Nodes.GroupBy(n => n.IsOnnxDomain ? n.OpType : $"{n.Domain}.{n.OpType}").OrderByDescending(g => g.Count()).Take(6).Select(g => $"{g.Key} {g.Count()}"));
    File.Delete(optimized);
    foreach (var f in Directory.GetFiles(Path.GetDirectoryName(optimized)!, Path.GetFileName(optimized) + "*")) File.Delete(f);

    List<(string, OrtValue)> Feed(int newTokens, int past)
    {
        var list = new List<(string, OrtValue)>();
        foreach (var v in inputs)
        {
            var shape = v.Shape!;
            if (v.Name == "input_ids") list.Add((v.Name, OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, newTokens).Select(i => (long)(i % 200 + 32)).ToArray(), [1, newTokens])));
            else if (v.Name == "attention_mask") list.Add((v.Name, OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, past + newTokens).ToArray(), [1, past + newTokens])));
            else if (v.Name == "position_ids") list.Add((v.Name, OrtValue.CreateTensorValueFromMemory(Enumerable.Range(past, newTokens).Select(i => (long)i).ToArray(), [1, newTokens])));
            else
            {
                var dims = shape.Select((d, i) => i == 0 ? 1 : i == 2 ? past : d ?? 1).ToArray();
                list.Add((v.Name, OrtValue.CreateTensorValueFromMemory(new float[dims.Aggregate(1L, (a, b) => a * b)], dims)));
            }
        }
        return list;
    }
    var outputs = session.OutputNames.ToList();
    var prefill = Feed(tokens, 0);
    var decode = Feed(1, tokens);
    using var ro = new RunOptions();
    double tp = Median(() => { using var o = session.Run(ro, prefill.Select(x => x.Item1).ToList(), prefill.Select(x => x.Item2).ToList(), outputs); }, 10);
    double td = Median(() => { using var o = session.Run(ro, decode.Select(x => x.Item1).ToList(), decode.Select(x => x.Item2).ToList(), outputs); }, 50);
    long bytes = new FileInfo(path).Length + (File.Exists(path + ".data") ? new FileInfo(path + ".data").Length : 0);
    Console.WriteLine(string.Create(inv, $"| {Path.GetFileName(path)} | {bytes / 1048576.0:0.0} | {tp:0.0} | {td:0.00} | {ops} |"));
    if (profile) profiles.Add($"{Path.GetFileName(path)}: prefill {Quantc.Bench.OrtProfile.PerOpType(path, ir, prefill)}");
}
foreach (var p in profiles) Console.WriteLine(p);
