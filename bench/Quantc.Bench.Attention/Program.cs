// Causal self-attention in ONNX Runtime CPU, one layer, the forms a compiled LLaMA can use: com.microsoft
// GroupQueryAttention, the standard ONNX Attention (opset 23, is_causal), the decomposed form exporters emit
// (MatMul, mask Add, Softmax, MatMul), that form with QDQ (int8 Q·Kᵀ and P·V), and quantc's ai.quantc.CausalAttention
// (lower_attention: the lower triangle only, the int64 padding mask). Prefill (S new tokens, empty cache) and decode
// (1 token after S cached). Usage: dotnet run -c Release -- [--tokens 512]
// [--heads 8] [--kv-heads 2] [--head-dim 64] [--rounds 7] [--threads N: ONNX Runtime's intra-op threads, default its own]
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

var inv = CultureInfo.InvariantCulture;
int S = 512, H = 8, KH = 2, D = 64, rounds = 7, threads = 0;
for (int i = 0; i < args.Length; i++)
    switch (args[i])
    {
        case "--tokens": S = int.Parse(args[++i], inv); break;
        case "--heads": H = int.Parse(args[++i], inv); break;
        case "--kv-heads": KH = int.Parse(args[++i], inv); break;
        case "--head-dim": D = int.Parse(args[++i], inv); break;
        case "--rounds": rounds = int.Parse(args[++i], inv); break;
        case "--threads": threads = int.Parse(args[++i], inv); break;
        default: throw new ArgumentException($"unknown argument '{args[i]}'");
    }
var rng = new Random(3);
TypeProto F() => new() { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } };
float[] Rand(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }

// Inputs: new q [1, s, H·D], k and v [1, s, KH·D]; past k/v [1, KH, p, D].
(Model m, string[] names, OrtValue[] values) Build(string form, int s, int p)
{
    var m = Model.Create(opset: 23);
    var g = m.Graph;
    var q = g.AddInput("q", F()); var k = g.AddInput("k", F()); var v = g.AddInput("v", F());
    var pk = g.AddInput("past_key", F()); var pv = g.AddInput("past_value", F());
    var names = new List<string> { "q", "k", "v", "past_key", "past_value" };
    var values = new List<OrtValue>
    {
        OrtValue.CreateTensorValueFromMemory(Rand((long)s * H * D), [1, s, H * D]),
        OrtValue.CreateTensorValueFromMemory(Rand((long)s * KH * D), [1, s, KH * D]),
        OrtValue.CreateTensorValueFromMemory(Rand((long)s * KH * D), [1, s, KH * D]),
        OrtValue.CreateTensorValueFromMemory(Rand((long)KH * p * D), [1, KH, p, D]),
        OrtValue.CreateTensorValueFromMemory(Rand((long)KH * p * D), [1, KH, p, D]),
    };
    Value I64(params long[] x) => g.AddInitializer(Tensor.FromValues(g.UniqueName("c"), 7, [x.Length], x.AsSpan()));
    Value F32(float x) => g.AddInitializer(Tensor.FromFloats(g.UniqueName("f"), [], [x]));
    float scale = 1f / MathF.Sqrt(D);
    // The additive causal mask [1, 1, s, p + s] (rank 4) or [s, p + s] (rank 2) as exporters build it.
    Value Mask(int s, int p, int rank)
    {
        int t = p + s;
        var mask = new float[(long)s * t];
        for (int i = 0; i < s; i++) for (int j = 0; j < t; j++) mask[(long)i * t + j] = j <= p + i ? 0f : float.NegativeInfinity;
        return g.AddInitializer(Tensor.FromFloats(g.UniqueName("mask"), rank == 4 ? [1, 1, s, t] : [s, t], mask));
    }
    switch (form)
    {
        case "GroupQueryAttention":
        case "GroupQueryAttention + bias":
        {
            m.SetOpset("com.microsoft", 1);
            var seqlens = g.AddInput("seqlens_k", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 6 } });
            var total = g.AddInput("total_len", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 6 } });
            names.Add("seqlens_k"); names.Add("total_len");
            values.Add(OrtValue.CreateTensorValueFromMemory(new[] { p + s - 1 }, [1]));
            values.Add(OrtValue.CreateTensorValueFromMemory(new[] { p + s }, []));
            var ins = new List<Value?> { q, k, v, pk, pv, seqlens, total };
            if (form.EndsWith("bias", StringComparison.Ordinal)) { ins.AddRange([null, null, null, Mask(s, p, 4)]); }
            var n = g.AddNode("GroupQueryAttention", ins, 3, "com.microsoft");
            n.SetAttribute("num_heads", (long)H); n.SetAttribute("kv_num_heads", (long)KH); n.SetAttribute("scale", scale);
            foreach (var o in n.Outputs) g.AddOutput(o!);
            break;
        }
        case "Attention-23":
        case "Attention-23 + mask":
        case "Attention-23 4D + mask":
        {
            bool masked = form.EndsWith("mask", StringComparison.Ordinal), four = form.Contains("4D", StringComparison.Ordinal);
            Value q4 = q, k4 = k, v4 = v;
            if (four)
            {
                Value Heads4(Value x, int heads) => g.AddNode("Transpose", [g.AddNode("Reshape", [x, I64(1, -1, heads, D)]).Output], 1).Also(n => n.SetAttribute("perm", new long[] { 0, 2, 1, 3 })).Output;
                q4 = Heads4(q, H); k4 = Heads4(k, KH); v4 = Heads4(v, KH);
            }
            var n = g.AddNode("Attention", [q4, k4, v4, masked ? Mask(s, p, 4) : null, pk, pv], 3);
            if (!four) { n.SetAttribute("q_num_heads", (long)H); n.SetAttribute("kv_num_heads", (long)KH); }
            if (!masked) n.SetAttribute("is_causal", 1L);
            n.SetAttribute("scale", scale);
            foreach (var o in n.Outputs) g.AddOutput(o!);
            break;
        }
        case "ai.quantc.CausalAttention":
        {
            m.SetOpset(CustomOps.Domain, 1);
            var mask = g.AddInput("attention_mask", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 7 } });
            names.Add("attention_mask");
            values.Add(OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, p + s).ToArray(), [1, p + s]));
            var n = g.AddNode("CausalAttention", [q, k, v, mask, pk, pv], 3, CustomOps.Domain);
            n.SetAttribute("q_num_heads", (long)H); n.SetAttribute("kv_num_heads", (long)KH); n.SetAttribute("scale", scale);
            foreach (var o in n.Outputs) g.AddOutput(o!);
            break;
        }
        default: // decomposed float or QDQ
        {
            bool qdq = form.Contains("QDQ", StringComparison.Ordinal);
            Value Node1(string op, Value[] ins, Action<Node>? a = null) { var n = g.AddNode(op, ins); a?.Invoke(n); return n.Output; }
            Value Heads(Value x, int heads) => Node1("Transpose", [Node1("Reshape", [x, I64(1, -1, heads, D)])], n => n.SetAttribute("perm", new long[] { 0, 2, 1, 3 }));
            Value QDq(Value x, float sc, bool unsigned)
            {
                if (!qdq) return x;
                var z = unsigned ? g.AddInitializer(Tensor.FromValues<byte>(g.UniqueName("z"), 2, [], [0])) : g.AddInitializer(Tensor.FromValues<sbyte>(g.UniqueName("z"), 3, [], [0]));
                var scv = F32(sc);
                return Node1("DequantizeLinear", [Node1("QuantizeLinear", [x, scv, z]), scv, z]);
            }
            var qh = Heads(q, H);
            var kc = Node1("Concat", [pk, Heads(k, KH)], n => n.SetAttribute("axis", 2L));
            var vc = Node1("Concat", [pv, Heads(v, KH)], n => n.SetAttribute("axis", 2L));
            g.AddOutput(kc); g.AddOutput(vc);
            int t = p + s;
            Value Rep(Value x) => H == KH ? x : Node1("Reshape", [Node1("Expand", [Node1("Unsqueeze", [x, I64(2)]), I64(1, KH, H / KH, t, D)]), I64(1, H, t, D)]);
            var kt = Node1("Transpose", [Rep(kc)], n => n.SetAttribute("perm", new long[] { 0, 1, 3, 2 }));
            var scores = Node1("Mul", [Node1("MatMul", [QDq(qh, 4f / 127, false), QDq(kt, 4f / 127, false)]), F32(scale)]);
            var probs = Node1("Softmax", [Node1("Add", [scores, Mask(s, p, 2)])], n => n.SetAttribute("axis", -1L));
            var ctx = Node1("MatMul", [QDq(probs, 1f / 255, true), QDq(Rep(vc), 4f / 127, false)]);
            g.AddOutput(Node1("Reshape", [Node1("Transpose", [ctx], n => n.SetAttribute("perm", new long[] { 0, 2, 1, 3 })), I64(1, s, H * D)]));
            break;
        }
    }
    return (m, names.ToArray(), values.ToArray());
}

Console.WriteLine(string.Create(inv, $"# {Quantc.Bench.HostInfo.Line()}; " +
    $"S {S}, heads {H}, kv heads {KH}, head dim {D}; intra-op threads {(threads > 0 ? threads : "ORT default")}; " +
    $"{rounds} interleaved rounds, median (min) ms"));
Console.WriteLine();
Console.WriteLine("| form | prefill ms | decode ms | ORT's optimised graph |");
Console.WriteLine("|---|---|---|---|");
string[] forms = ["GroupQueryAttention", "GroupQueryAttention + bias", "Attention-23", "Attention-23 + mask", "Attention-23 4D + mask",
    "decomposed float", "decomposed QDQ int8", "ai.quantc.CausalAttention"];
var cases = new List<(string form, Action prefill, Action decode, string ops, List<double> tp, List<double> td)>();
foreach (var form in forms)
{
    Action Make(int s, int p, out string ops)
    {
        var (m, names, values) = Build(form, s, p);
        string opt = Path.Combine(Path.GetTempPath(), $"attn-{Guid.NewGuid():N}.onnx");
        var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = opt, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (threads > 0) so.IntraOpNumThreads = threads;
        InferenceSession session;
        try { session = OrtModel.CreateSession(m, options: so); }
        catch (Exception e) { ops = "cannot load: " + e.Message.Split('\n')[0]; return () => { }; }
        using (var om = Model.Load(opt)) ops = string.Join(", ", om.Graph.Nodes.GroupBy(n => n.OpType).OrderByDescending(x => x.Count()).Select(x => $"{x.Key} {x.Count()}"));
        File.Delete(opt);
        var outs = session.OutputNames.ToList();
        var ro = new RunOptions();
        return () => { using var o = session.Run(ro, names, values, outs); };
    }
    var pf = Make(S, 0, out string ops);
    var dc = Make(1, S, out _);
    try { pf(); pf(); dc(); dc(); }
    catch (Exception e) { ops = "cannot run: " + e.Message.Split('\n')[0]; pf = () => { }; dc = () => { }; }
    cases.Add((form, pf, dc, ops, [], []));
}
for (int r = 0; r < rounds; r++)
    foreach (var c in cases)
    {
        var sw = Stopwatch.StartNew(); c.prefill(); c.tp.Add(sw.Elapsed.TotalMilliseconds);
        sw.Restart(); for (int i = 0; i < 20; i++) c.decode(); c.td.Add(sw.Elapsed.TotalMilliseconds / 20);
    }
static double Med(List<double> x) { var t = x.OrderBy(v => v).ToList(); return t[t.Count / 2]; }
foreach (var c in cases)
    Console.WriteLine(string.Create(inv, $"| {c.form} | {Med(c.tp):0.00} ({c.tp.Min():0.00}) | {Med(c.td):0.000} ({c.td.Min():0.000}) | {c.ops} |"));

static class NodeExtensions
{
    public static Node Also(this Node n, Action<Node> a) { a(n); return n; }
}
