// Kernel throughput on this CPU: ai.quantc.MatMulInt8 against ONNX Runtime's integer MatMul
// (QDQ that ORT fuses, and MatMulInteger) and fp32 MatMul on the same shapes; ai.quantc.Hadamard
// against a dense MatMul with the Hadamard matrix. Each case runs in ONNX Runtime (one session per
// case, warm-up, then the median of timed runs). Usage: dotnet run -c Release [-- --quick] [--vnni-peak GOPS]
// [--shapes MxKxN,MxKxN...] [--gemm-only] [--int4] [--threads N]
// (--int4: ai.quantc.MatMulInt4Int8 with float A, group 32, against fp32 MatMul instead, then stop; --threads: the sessions'
// intra-op threads, default ORT's)
// (--shapes: the GEMM shapes to time instead of the default ones; --gemm-only: skip the Hadamard table)
// (--vnni-peak: the measured int8 peak of custom-ops/build/quantc_vnni_peak, for the "of VNNI peak" column).
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

bool quick = args.Contains("--quick");
var inv = CultureInfo.InvariantCulture;
int peakAt = Array.IndexOf(args, "--vnni-peak");
double peak = peakAt >= 0 && peakAt + 1 < args.Length && double.TryParse(args[peakAt + 1], NumberStyles.Float, inv, out double p) && p > 0 ? p : double.NaN;
var rng = new Random(1);
int threadsAt = Array.IndexOf(args, "--threads");
int intraThreads = threadsAt >= 0 && threadsAt + 1 < args.Length ? int.Parse(args[threadsAt + 1], inv) : 0;
TypeProto T(int e) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = e } };

double Median(Func<Action> setup, int reps)
{
    var run = setup();
    for (int i = 0; i < 2; i++) run();
    var times = new List<double>();
    var budget = Stopwatch.StartNew();
    for (int i = 0; i < reps && (i < 3 || budget.Elapsed.TotalSeconds < 4); i++)
    {
        var sw = Stopwatch.StartNew();
        run();
        times.Add(sw.Elapsed.TotalSeconds);
    }
    times.Sort();
    return times[times.Count / 2];
}

Action Session(Model m, string input, OrtValue value)
{
    var so = new SessionOptions { IntraOpNumThreads = intraThreads };
    var s = OrtModel.CreateSession(m, options: so);
    var ro = new RunOptions();
    return () => { using var o = s.Run(ro, [input], [value], [m.Graph.Outputs[0].Name]); };
}

string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':')[1].Trim() ?? "?";
double mhz = double.Parse(File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("cpu MHz", StringComparison.Ordinal)).Split(':')[1].Trim(), inv);
int cores = Environment.ProcessorCount;
Console.WriteLine($"# CPU: {cpu}, {cores} cores, nominal {mhz:0} MHz; ISA path of libquantc_ops: see QUANTC_ISA (default: best available)");
Console.WriteLine();
if (args.Contains("--int4"))
{
    // ai.quantc.MatMulInt4Int8 with float32 A (per-token quantization inside, as the compiled W4A8 models run it), group 32,
    // against fp32 MatMul on the same shapes, in ONNX Runtime (weights packed at session creation).
    Console.WriteLine($"intra-op threads: {(intraThreads == 0 ? "ORT default" : intraThreads.ToString(inv))}");
    Console.WriteLine("| M × K × N | fp32 MatMul GFLOPS | ai.quantc.MatMulInt4Int8 (float A, G = 32) GOPS | vs fp32 |");
    Console.WriteLine("|---|---|---|---|");
    var int4Shapes = shapesArg() ?? [(512, 512, 768), (512, 512, 2816), (512, 1408, 512), (512, 4096, 4096)];
    foreach (var (M, K, N) in int4Shapes)
    {
        var wf = Enumerable.Range(0, K * N).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var xf = Enumerable.Range(0, M * K).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        double ops = 2.0 * M * K * N;
        using var mf = Model.Create(opset: 21);
        mf.Graph.AddOutput(mf.Graph.AddNode("MatMul", [mf.Graph.AddInput("x", T(1)), mf.Graph.AddInitializer(Tensor.FromFloats("w", [K, N], wf))],
            outputNames: ["y"]).Output);
        using var xv = OrtValue.CreateTensorValueFromMemory(xf, [M, K]);
        double tf = Median(() => Session(mf, "x", xv), 20);
        var packed = new byte[N * K / 2];
        for (int i = 0; i < packed.Length; i++) packed[i] = (byte)rng.Next(256);
        var scales = Enumerable.Range(0, N * K / 32).Select(_ => (float)(0.01 + 0.01 * rng.NextDouble())).ToArray();
        using var mc = Model.Create(opset: 21);
        mc.SetOpset(CustomOps.Domain, 1);
        var g = mc.Graph;
        var node = g.AddNode("MatMulInt4Int8", [g.AddInput("x", T(1)), g.AddInitializer(Tensor.FromFloats("s", [], [1f])),
            g.AddInitializer(Tensor.FromBytes("w", 2, [N, K / 2], packed)), g.AddInitializer(Tensor.FromFloats("ws", [N, K / 32], scales))],
            domain: CustomOps.Domain, outputNames: ["y"]);
        node.SetAttribute("group_size", 32L);
        g.AddOutput(node.Output);
        double tc = Median(() => Session(mc, "x", xv), 20);
        Console.WriteLine(string.Create(inv, $"| {M} × {K} × {N} | {ops / tf / 1e9:0.0} | {ops / tc / 1e9:0.0} | {tf / tc:0.00}× |"));
    }
    return;
}

(int, int, int)[]? shapesArg()
{
    int at = Array.IndexOf(args, "--shapes");
    return at >= 0 && at + 1 < args.Length ? args[at + 1].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ParseShape).ToArray() : null;
}

Console.WriteLine("| M × K × N | fp32 MatMul GFLOPS | ORT QDQ int8 GOPS | ORT MatMulInteger GOPS | ai.quantc.MatMulInt8 GOPS | MatMulInt8 int7 weights GOPS | vs fp32 | vs ORT QDQ | of VNNI peak |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
int shapesAt = Array.IndexOf(args, "--shapes");
var shapes = shapesAt >= 0 && shapesAt + 1 < args.Length
    ? args[shapesAt + 1].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ParseShape).ToArray()
    : quick ? new[] { (1, 1024, 1024), (128, 1024, 1024) } : new[] { (1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (512, 4096, 4096), (512, 4096, 11008) };
foreach (var (M, K, N) in shapes)
{
    var wf = Enumerable.Range(0, K * N).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    var xf = Enumerable.Range(0, M * K).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    var xi8 = xf.Select(v => (sbyte)Math.Clamp(Math.Round(v * 254), -127, 127)).ToArray();
    var wq = wf.Select(v => (sbyte)Math.Clamp(Math.Round(v * 254), -127, 127)).ToArray();
    double ops = 2.0 * M * K * N;

    // fp32 MatMul.
    using var mf = Model.Create(opset: 21);
    mf.Graph.AddOutput(mf.Graph.AddNode("MatMul", [mf.Graph.AddInput("x", T(1)), mf.Graph.AddInitializer(Tensor.FromFloats("w", [K, N], wf))], outputNames: ["y"]).Output);
    using var xv = OrtValue.CreateTensorValueFromMemory(xf, [M, K]);
    double tf = Median(() => Session(mf, "x", xv), 20);

    // QDQ: x → Q → DQ → MatMul(DQ(w_int8 per channel)): ORT fuses this into an integer MatMul.
    using var mq = Model.Create(opset: 21);
    {
        var g = mq.Graph;
        var x = g.AddInput("x", T(1));
        var s = g.AddInitializer(Tensor.FromFloats("s", [], [1f / 254]));
        var z = g.AddInitializer(Tensor.FromValues<sbyte>("z", 3, [], [0]));
        var q = g.AddNode("QuantizeLinear", [x, s, z]);
        var dq = g.AddNode("DequantizeLinear", [q.Output, s, z]);
        var wv = g.AddInitializer(Tensor.FromValues<sbyte>("wq", 3, [K, N], wq));
        var ws = g.AddInitializer(Tensor.FromFloats("ws", [N], Enumerable.Repeat(1f / 254, N).ToArray()));
        var wz = g.AddInitializer(Tensor.FromValues<sbyte>("wz", 3, [N], new sbyte[N]));
        var dqw = g.AddNode("DequantizeLinear", [wv, ws, wz]);
        dqw.SetAttribute("axis", 1L);
        g.AddOutput(g.AddNode("MatMul", [dq.Output, dqw.Output], outputNames: ["y"]).Output);
    }
    double tq = Median(() => Session(mq, "x", xv), 20);

    // MatMulInteger on int8 input (int32 out).
    using var mi = Model.Create(opset: 21);
    mi.Graph.AddOutput(mi.Graph.AddNode("MatMulInteger", [mi.Graph.AddInput("x", T(3)), mi.Graph.AddInitializer(Tensor.FromValues<sbyte>("wq", 3, [K, N], wq))], outputNames: ["y"]).Output);
    using var xiv = OrtValue.CreateTensorValueFromMemory(xi8, [M, K]);
    double ti = Median(() => Session(mi, "x", xiv), 20);

    // ai.quantc.MatMulInt8 (weight stored [N, K]); also with 7-bit weights ([-64, 63], what quantc emits
    // for static 8-bit layers on CPUs without VNNI), which take the u8s8 (vpmaddubsw) AVX2 kernel.
    double MatMulInt8Time(Func<int, sbyte> weight)
    {
        var wt = new sbyte[N * K];
        for (int k = 0; k < K; k++) for (int n = 0; n < N; n++) wt[n * K + k] = weight(k * N + n);
        using var mc = Model.Create(opset: 21);
        mc.SetOpset(CustomOps.Domain, 1);
        var g = mc.Graph;
        g.AddOutput(g.AddNode("MatMulInt8", [g.AddInput("x", T(3)), g.AddInitializer(Tensor.FromFloats("s", [], [1f / 254])),
            g.AddInitializer(Tensor.FromValues<sbyte>("w", 3, [N, K], wt)), g.AddInitializer(Tensor.FromFloats("ws", [N], Enumerable.Repeat(1f / 254, N).ToArray()))],
            domain: CustomOps.Domain, outputNames: ["y"]).Output);
        return Median(() => Session(mc, "x", xiv), 20);
    }
    double tc = MatMulInt8Time(i => wq[i]);
    double t7 = MatMulInt8Time(i => (sbyte)Math.Clamp(Math.Round(wf[i] * 127), -64, 63));
    Console.WriteLine(string.Create(inv, $"| {M} × {K} × {N} | {ops / tf / 1e9:0.0} | {ops / tq / 1e9:0.0} | {ops / ti / 1e9:0.0} | {ops / tc / 1e9:0.0} | {ops / t7 / 1e9:0.0} | {tf / tc:0.00}× | {tq / tc:0.00}× | {(double.IsNaN(peak) ? "–" : (ops / tc / 1e9 / peak).ToString("P0", inv))} |"));
}

if (args.Contains("--gemm-only")) return;
Console.WriteLine();
Console.WriteLine("| rows × n | dense MatMul (x · Hᵀ) ms | ai.quantc.Hadamard ms | speed-up |");
Console.WriteLine("|---|---|---|---|");
foreach (var (rows, n) in quick ? new[] { (64, 1024) } : new[] { (512, 4096), (512, 5120), (512, 14336), (16, 14336) })
{
    var x = Enumerable.Range(0, rows * n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    using var xv = OrtValue.CreateTensorValueFromMemory(x, [rows, n]);
    var h = Hadamard.Matrix(n);
    var ht = new float[h.Length];
    float inv2 = 1f / MathF.Sqrt(n);
    for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) ht[(long)j * n + i] = h[(long)i * n + j] * inv2;
    using var md = Model.Create(opset: 21);
    md.Graph.AddOutput(md.Graph.AddNode("MatMul", [md.Graph.AddInput("x", T(1)), md.Graph.AddInitializer(Tensor.FromFloats("h", [n, n], ht))], outputNames: ["y"]).Output);
    double td = Median(() => Session(md, "x", xv), 10);
    using var mh = Model.Create(opset: 21);
    mh.SetOpset(CustomOps.Domain, 1);
    mh.Graph.AddOutput(mh.Graph.AddNode("Hadamard", [mh.Graph.AddInput("x", T(1))], domain: CustomOps.Domain, outputNames: ["y"]).Output);
    double th = Median(() => Session(mh, "x", xv), 10);
    Console.WriteLine(string.Create(inv, $"| {rows} × {n} | {td * 1e3:0.00} | {th * 1e3:0.00} | {td / th:0.0}× |"));
}

static (int, int, int) ParseShape(string s)
{
    var d = s.Split('x');
    if (d.Length != 3 || !d.All(v => int.TryParse(v, out int n) && n > 0))
        throw new ArgumentException($"--shapes: '{s}' is not MxKxN (three positive integers)");
    return (int.Parse(d[0]), int.Parse(d[1]), int.Parse(d[2]));
}
