// GFLOP/s of Quantc.Core.Numerics.Reconstruction.Gemm (the FlexRound / LRQ loop's products) at the loop's shapes and at square
// sizes, against ONNX Runtime's fp32 MatMul (MLAS) on the same shapes and against the fp32 peak of the cores it may use:
// cores × clock × 32 flops per cycle (two 256-bit FMA units × 8 lanes × 2). Ours and ONNX Runtime's alternate run by run and
// each figure is a median, so that a machine shared with other work slows both alike.
// Usage: dotnet run -c Release -- [--ghz 3.0] (default: the largest "cpu MHz" of /proc/cpuinfo)
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

var inv = CultureInfo.InvariantCulture;
if (args.Length > 0 && args[0] is "peak" or "block")
{
    var (a1, aa) = Peak.Measure();
    string cpuName = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("model name", StringComparison.Ordinal)).Split(':')[1].Trim();
    Console.WriteLine(string.Create(inv, $"# measured fp32 FMA peak on {cpuName}, {Environment.ProcessorCount} threads, load average " +
        $"{File.ReadAllText("/proc/loadavg").Split(' ')[0]}: {a1:0.0} GFLOP/s on 1 thread, {aa:0.0} on all; nominal " +
        $"{Environment.ProcessorCount} × the one-thread figure = {Environment.ProcessorCount * a1:0.0}"));
    if (args[0] == "block")
    {
        var options = args.Skip(1).Select(a => a.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        BlockStep.Run(options, Environment.ProcessorCount * a1);
    }
    return;
}
string Arg(string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}
double ghz = double.Parse(Arg("--ghz", "0"), inv);
if (ghz == 0)
    ghz = File.ReadLines("/proc/cpuinfo").Where(l => l.StartsWith("cpu MHz", StringComparison.Ordinal))
        .Select(l => double.Parse(l.Split(':')[1].Trim(), inv)).DefaultIfEmpty(3000).Max() / 1000;
int cores = Environment.ProcessorCount;
double peak = cores * ghz * 32;
string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':')[1]
    .Trim() ?? "?";
Console.WriteLine(string.Create(inv, $"# {cpu}, {cores} cores at {ghz:0.00} GHz: fp32 FMA peak {peak:0} GFLOP/s; load average " +
    $"{File.ReadAllText("/proc/loadavg").Split(' ')[0]}"));
Console.WriteLine("| product | m × k × n | quantc Gemm GFLOP/s | ONNX Runtime MatMul GFLOP/s | quantc / ORT | quantc share of peak |");
Console.WriteLine("|---|---|---:|---:|---:|---:|");
var rng = new Random(1);
float[] R(long n) { var x = new float[n]; for (long i = 0; i < n; i++) x[i] = (float)rng.NextDouble(); return x; }
TypeProto T(int e) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = e } };

void Run(string what, int m, int k, int n, Action<float[], float[], float[]> f, bool compare)
{
    var a = R((long)m * k);
    var b = R((long)k * n);
    var c = new float[(long)m * n];
    Action ort = () => { };
    if (compare)
    {
        var model = Model.Create(opset: 21);
        model.Graph.AddOutput(model.Graph.AddNode("MatMul", [model.Graph.AddInput("x", T(1)),
            model.Graph.AddInitializer(Tensor.FromFloats("w", [k, n], b))], outputNames: ["y"]).Output);
        var session = OrtModel.CreateSession(model);
        var xv = OrtValue.CreateTensorValueFromMemory(a, [m, k]);
        var ro = new RunOptions();
        ort = () => { using var o = session.Run(ro, ["x"], [xv], ["y"]); };
    }
    var ours = new List<double>();
    var theirs = new List<double>();
    f(a, b, c);
    ort();
    var budget = Stopwatch.StartNew();
    while (ours.Count < 5 || budget.Elapsed.TotalSeconds < 3)
    {
        var sw = Stopwatch.StartNew();
        f(a, b, c);
        ours.Add(sw.Elapsed.TotalSeconds);
        if (!compare) continue;
        sw.Restart();
        ort();
        theirs.Add(sw.Elapsed.TotalSeconds);
    }
    double Med(List<double> t) { t.Sort(); return t[t.Count / 2]; }
    double flops = 2.0 * m * k * n;
    double g = flops / Med(ours) / 1e9, go = compare ? flops / Med(theirs) / 1e9 : double.NaN;
    string ortText = compare ? go.ToString("0.0", inv) : "–", ratio = compare ? (g / go).ToString("0.00", inv) : "–";
    Console.WriteLine(string.Create(inv, $"| {what} | {m} × {k} × {n} | {g:0.0} | {ortText} | {ratio} | {g / peak:P0} |"));
}
if (args.Length > 0 && args[0] == "shapes")
{
    if (args.Length > 1) Gemm.MaxThreads = int.Parse(args[1], inv);
    Run("Nn (in cache)", 96, 256, 256, (a, b, c) => Gemm.Nn(a, b, c, 96, 256, 256), true);
    // The 1b block step's products (t = 128 tokens): forward Nt, backward Nn and Tn, LRQ's L·U (rank 512) and its two gradients.
    foreach (var (m, k, n) in new[] { (128, 2048, 2048), (128, 2048, 5632), (128, 5632, 2048), (5632, 2048, 512) })
        Run("Nt", m, k, n, (a, b, c) => Gemm.Nt(a, b, c, m, k, n), false);
    foreach (var (m, k, n) in new[] { (128, 5632, 2048), (128, 2048, 5632), (5632, 512, 2048) })
        Run("Nn", m, k, n, (a, b, c) => Gemm.Nn(a, b, c, m, k, n), true);
    foreach (var (m, k, n) in new[] { (5632, 128, 2048), (2048, 128, 5632), (512, 5632, 2048) })
        Run("Tn", m, k, n, (a, b, c) => Gemm.Tn(a, b, c, m, k, n, accumulate: true), false);
    return;
}
foreach (var (m, k, n) in new[] { (256, 128, 128), (256, 128, 344), (256, 344, 128), (512, 512, 512), (1024, 1024, 1024) })
    Run("Nn", m, k, n, (a, b, c) => Gemm.Nn(a, b, c, m, k, n), true);
// The loop's two products per step (weight-only): E = X·Dᵀ (Nt) and ∂Ŵ = Eᵀ·X (Tn), T = 256 tokens (transposes included).
Run("Nt (E = X·Dᵀ)", 256, 128, 344, (a, b, c) => Gemm.Nt(a, b, c, 256, 128, 344), false);
Run("Tn (∂Ŵ = Eᵀ·X)", 344, 256, 128, (a, b, c) => Gemm.Tn(a, b, c, 344, 256, 128), false);
