// Mamba on ONNX Runtime CPU. (1) The selective scan alone: the float ONNX Scan (the reference builder's
// body, Δ already through softplus) against ai.quantc.QSelectiveScan on int8 x, dt, B, C, z (softplus,
// dt bias and the SiLU gate fused in). (2) End to end: prefill of N tokens (zero conv / SSM states) of
// each model given. Median of timed runs after warm-up.
// Usage: dotnet run -c Release -- [MODEL.onnx ...] [--tokens 128] [--dim 1024] [--state 16] [--profile]
// --profile: also prints, per model, ONNX Runtime's kernel time per op type over 3 prefills.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Models;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

var inv = CultureInfo.InvariantCulture;
int tokens = 128, dim = 1024, state = 16;
bool profile = false;
var models = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--tokens") tokens = int.Parse(args[++i], inv);
    else if (args[i] == "--dim") dim = int.Parse(args[++i], inv);
    else if (args[i] == "--state") state = int.Parse(args[++i], inv);
    else if (args[i] == "--profile") profile = true;
    else models.Add(args[i]);
}

double Median(Action run, int reps)
{
    run(); run();
    var t = new List<double>();
    var budget = Stopwatch.StartNew();
    for (int i = 0; i < reps && (i < 3 || budget.Elapsed.TotalSeconds < 10); i++)
    {
        var sw = Stopwatch.StartNew();
        run();
        t.Add(sw.Elapsed.TotalMilliseconds);
    }
    t.Sort();
    return t[t.Count / 2];
}

double Time(Model m, List<(string Name, OrtValue Value)> feed, int reps)
{
    using var so = OrtModel.DefaultOptions();
    using var s = OrtModel.CreateSession(m, null, so);
    using var ro = new RunOptions();
    var outs = s.OutputNames.ToList();
    return Median(() => { using var o = s.Run(ro, feed.Select(f => f.Name).ToList(), feed.Select(f => f.Value).ToList(), outs); }, reps);
}

var rng = new Random(7);
float[] Rand(long n, double lo, double hi) => Enumerable.Range(0, (int)n).Select(_ => (float)(lo + rng.NextDouble() * (hi - lo))).ToArray();
sbyte[] RandI8(long n) => Enumerable.Range(0, (int)n).Select(_ => (sbyte)rng.Next(-127, 128)).ToArray();
string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':')[1].Trim() ?? "?";
Console.WriteLine($"# CPU: {cpu}, {Environment.ProcessorCount} cores");
Console.WriteLine();

// (1) The scan: batch 1, L tokens, d_inner = dim, d_state = state.
long L = tokens, e = dim, n = state;
var a = Rand(e * n, -16, -1);
var d = Enumerable.Repeat(1f, (int)e).ToArray();
using var scanF = Model.Create(opset: 18);
{
    var b = new OnnxBuilder(scanF.Graph);
    var h0 = b.Input("h0", DT.Float, 1, e, n);
    var delta = b.Input("delta", DT.Float, 1, L, e);
    var x = b.Input("x", DT.Float, 1, L, e);
    var bm = b.Input("B", DT.Float, 1, L, n);
    var cm = b.Input("C", DT.Float, 1, L, n);
    var av = scanF.Graph.AddInitializer(Tensor.FromFloats("A", [e, n], a));
    var dv = scanF.Graph.AddInitializer(Tensor.FromFloats("D", [e], d));
    var scan = b.AddNode("Scan", [h0, delta, x, bm, cm], 2);
    scan.SetAttribute("num_scan_inputs", 4L);
    scan.SetAttribute("scan_input_axes", [1L, 1, 1, 1]);
    scan.SetAttribute("scan_output_axes", [1L]);
    var bb = new OnnxBuilder(scan.SetSubgraph("body", "body"), b);
    var hp = bb.Input("h_prev", DT.Float, 1, e, n);
    var dT = bb.Input("dt_t", DT.Float, 1, e);
    var xT = bb.Input("x_t", DT.Float, 1, e);
    var bT = bb.Input("B_t", DT.Float, 1, n);
    var cT = bb.Input("C_t", DT.Float, 1, n);
    var dA = bb.Op("Exp", bb.Op("Mul", bb.Op("Unsqueeze", dT, bb.Ints(-1)), av));
    var dBx = bb.Op("Mul", bb.Op("Unsqueeze", bb.Op("Mul", dT, xT), bb.Ints(-1)), bb.Op("Unsqueeze", bT, bb.Ints(1)));
    var hn = bb.Op("Add", bb.Op("Mul", dA, hp), dBx);
    var y = bb.Op("Add", bb.Op("Squeeze", bb.Op("MatMul", hn, bb.Op("Unsqueeze", cT, bb.Ints(-1))), bb.Ints(-1)), bb.Op("Mul", dv, xT));
    bb.Output(hn, "h_next", DT.Float, 1, e, n);
    bb.Output(y, "y_t", DT.Float, 1, e);
    b.Output(scan.Outputs[0]!, "h", DT.Float, 1, e, n);
    b.Output(scan.Outputs[1]!, "y", DT.Float, 1, L, e);
}
using var scanQ = Model.Create(opset: 18);
{
    var g = scanQ.Graph;
    scanQ.SetOpset(CustomOps.Domain, 1);
    var b = new OnnxBuilder(g);
    Value S(string name, float v) => g.AddInitializer(Tensor.FromFloats(name, [], [v]));
    var x = b.Input("x", DT.Int8, 1, L, e);
    var dt = b.Input("dt", DT.Int8, 1, L, e);
    var bm = b.Input("B", DT.Int8, 1, L, n);
    var cm = b.Input("C", DT.Int8, 1, L, n);
    var z = b.Input("z", DT.Int8, 1, L, e);
    var h0 = b.Input("h0", DT.Float, 1, e, n);
    var node = g.AddNode("QSelectiveScan", [x, S("xs", 0.02f), dt, S("dts", 0.01f), g.AddInitializer(Tensor.FromFloats("A", [e, n], a)), bm, S("bs", 0.02f), cm, S("cs", 0.02f),
        g.AddInitializer(Tensor.FromFloats("D", [e], d)), z, S("zs", 0.02f), g.AddInitializer(Tensor.FromFloats("dt_bias", [e], Rand(e, -6, -2))), h0], 2, CustomOps.Domain, "scan", ["y", "h"]);
    b.Output(node.Outputs[0]!, "y_out", DT.Float, 1, L, e);
    b.Output(node.Outputs[1]!, "h_out", DT.Float, 1, e, n);
}
OrtValue F(float[] v, params long[] s) => OrtValue.CreateTensorValueFromMemory(v, s);
OrtValue I8(sbyte[] v, params long[] s) => OrtValue.CreateTensorValueFromMemory(v, s);
double tf = Time(scanF, [("h0", F(new float[e * n], 1, e, n)), ("delta", F(Rand(L * e, 0.001, 0.1), 1, L, e)), ("x", F(Rand(L * e, -1, 1), 1, L, e)),
    ("B", F(Rand(L * n, -1, 1), 1, L, n)), ("C", F(Rand(L * n, -1, 1), 1, L, n))], 20);
double tq = Time(scanQ, [("x", I8(RandI8(L * e), 1, L, e)), ("dt", I8(RandI8(L * e), 1, L, e)), ("B", I8(RandI8(L * n), 1, L, n)), ("C", I8(RandI8(L * n), 1, L, n)),
    ("z", I8(RandI8(L * e), 1, L, e)), ("h0", F(new float[e * n], 1, e, n))], 20);
Console.WriteLine("| selective scan (batch 1) | float ONNX Scan ms | ai.quantc.QSelectiveScan ms | speed-up |");
Console.WriteLine("|---|---|---|---|");
Console.WriteLine(string.Create(inv, $"| L {L}, d_inner {e}, d_state {n} | {tf:0.00} | {tq:0.000} | {tf / tq:0.0}× |"));
Console.WriteLine();

// (2) End to end.
if (models.Count == 0) return;
Console.WriteLine($"| model | file MiB | prefill {tokens} tokens ms |");
Console.WriteLine("|---|---|---|");
var profiles = new List<string>();
foreach (var path in models)
{
    using var m = Model.Load(path);
    var feed = new List<(string, OrtValue)>();
    foreach (var v in m.Graph.Inputs.Where(v => !v.IsInitializer))
    {
        if (v.Name == "input_ids") feed.Add((v.Name, OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, tokens).Select(i => (long)(i % 200 + 32)).ToArray(), [1, tokens])));
        else
        {
            var dims = v.Shape!.Select((x, i) => i == 0 ? 1 : x ?? 1).ToArray();
            feed.Add((v.Name, OrtValue.CreateTensorValueFromMemory(new float[dims.Aggregate(1L, (p, q) => p * q)], dims)));
        }
    }
    double t = Time(m, feed, 10);
    long bytes = new FileInfo(path).Length + (File.Exists(path + ".data") ? new FileInfo(path + ".data").Length : 0);
    Console.WriteLine(string.Create(inv, $"| {Path.GetFileName(path)} | {bytes / 1048576.0:0.0} | {t:0.0} |"));
    if (profile) profiles.Add($"{Path.GetFileName(path)}: prefill {Quantc.Bench.OrtProfile.PerOpType(path, m, feed)}");
}
foreach (var p in profiles) Console.WriteLine(p);
