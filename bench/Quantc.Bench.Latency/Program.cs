// Latency of models in ONNX Runtime CPU: prefill of N tokens (empty KV cache) and one decode step
// (one token after N cached), timed in interleaved rounds after warm-up; plus the op histogram of the graph
// ONNX Runtime actually runs (its optimised model), to see what the QDQ was fused into.
// Usage: dotnet run -c Release -- MODEL.onnx [MODEL2.onnx ...] [--tokens 512] [--rounds 9] [--threads N] [--profile] [--shared-cache]
// The first model is the basis of the speed-ups (put fp32 first).
// --shared-cache: a model whose attentions take one buffer as past and present cache (what quantc's GenAI folder sets as
// past_present_share_buffer: ai.quantc.CausalAttention, ONNX Runtime's GroupQueryAttention) runs its decode step as GenAI
// does — past and present bound to one buffer of tokens + 1 rows per layer, the op writing only the new row — instead of
// receiving a fresh present copy of the whole cache each step; the table marks such models "(shared cache)".
// --profile: also runs the prefill and the decode step under ONNX Runtime's profiler and prints where the time goes, per op type.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;

var inv = CultureInfo.InvariantCulture;
int tokens = 512;
bool profile = false, sharedCache = false;
int rounds = 9, threads = 0;
var models = new List<string>();
var profiles = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--tokens") tokens = int.Parse(args[++i], inv);
    else if (args[i] == "--profile") profile = true;
    else if (args[i] == "--rounds") rounds = int.Parse(args[++i], inv);
    else if (args[i] == "--threads") threads = int.Parse(args[++i], inv);
    else if (args[i] == "--shared-cache") sharedCache = true;
    else models.Add(args[i]);
}

var sessions = new List<Bench>();
foreach (var path in models) sessions.Add(Bench.Open(path, tokens, threads, sharedCache));

// Interleaved rounds: every round times every model once (prefill: one run; decode: the mean of 10 steps),
// so slow drifts of a shared machine hit all models alike; the ratio against the first model is taken
// per round (paired) and its median reported.
foreach (var b in sessions) { b.Prefill(); b.Prefill(); b.Decode(); b.Decode(); }
for (int r = 0; r < rounds; r++)
    foreach (var b in sessions)
    {
        b.PrefillMs.Add(b.Prefill());
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 10; i++) b.Decode();
        b.DecodeMs.Add(sw.Elapsed.TotalMilliseconds / 10);
    }

static double Med(IEnumerable<double> xs) { var t = xs.OrderBy(x => x).ToList(); return t.Count % 2 == 1 ? t[t.Count / 2] : (t[t.Count / 2 - 1] + t[t.Count / 2]) / 2; }
var basis = sessions[0];
Console.WriteLine(Quantc.Bench.HostInfo.Line());
Console.WriteLine(string.Create(inv, $"{rounds} interleaved rounds, intra-op threads {(threads > 0 ? threads.ToString(inv) : "ORT default")}; speed-up = median over rounds of (first model's time / this model's time) in the same round"));
Console.WriteLine();
Console.WriteLine($"| model | file MiB | prefill {tokens} ms median (min) | prefill speed-up | decode ms median (min) | decode speed-up | ORT's optimised graph: main ops |");
Console.WriteLine("|---|---|---|---|---|---|---|");
foreach (var b in sessions)
{
    double sp = Med(b.PrefillMs.Select((t, i) => basis.PrefillMs[i] / t)), sd = Med(b.DecodeMs.Select((t, i) => basis.DecodeMs[i] / t));
    Console.WriteLine(string.Create(inv, $"| {Path.GetFileName(b.Path)}{(b.Binding is null ? "" : " (shared cache)")} | {b.Bytes / 1048576.0:0.0} | {Med(b.PrefillMs):0.0} ({b.PrefillMs.Min():0.0}) | {sp:0.00}× | {Med(b.DecodeMs):0.00} ({b.DecodeMs.Min():0.00}) | {sd:0.00}× | {b.Ops} |"));
    if (profile)
    {
        profiles.Add($"{Path.GetFileName(b.Path)} prefill: {Quantc.Bench.OrtProfile.PerOpType(b.Path, b.Ir, b.PrefillFeed, 3)}");
        profiles.Add($"{Path.GetFileName(b.Path)} decode: {Quantc.Bench.OrtProfile.PerOpType(b.Path, b.Ir, b.DecodeFeed, 30)}");
    }
}
foreach (var p in profiles) Console.WriteLine(p);

/// <summary>One model's session, its prefill and decode feeds, and the times measured.</summary>
sealed class Bench
{
    public required string Path { get; init; }
    public required Model Ir { get; init; }
    public required InferenceSession Session { get; init; }
    public required List<(string, OrtValue)> PrefillFeed { get; init; }
    public required List<(string, OrtValue)> DecodeFeed { get; init; }
    public required string Ops { get; init; }
    public required long Bytes { get; init; }
    public List<double> PrefillMs { get; } = [];
    public List<double> DecodeMs { get; } = [];
    /// <summary>The decode step with past and present bound to one buffer (--shared-cache), or null.</summary>
    public OrtIoBinding? Binding { get; init; }
    readonly RunOptions _ro = new();

    public double Prefill() => Time(PrefillFeed);

    public double Decode()
    {
        if (Binding is null) return Time(DecodeFeed);
        var sw = Stopwatch.StartNew();
        Session.RunWithBinding(_ro, Binding);
        return sw.Elapsed.TotalMilliseconds;
    }

    double Time(List<(string, OrtValue)> feed)
    {
        var sw = Stopwatch.StartNew();
        using var o = Session.Run(_ro, feed.Select(x => x.Item1).ToList(), feed.Select(x => x.Item2).ToList(), Session.OutputNames.ToList());
        return sw.Elapsed.TotalMilliseconds;
    }

    public static Bench Open(string path, int tokens, int threads, bool sharedCache)
    {
        var ir = Model.Load(path);
        var inputs = ir.Graph.Inputs.Where(v => !v.IsInitializer).ToList();
        string optimized = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, $".opt-{Guid.NewGuid():N}.onnx");
        var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (threads > 0) so.IntraOpNumThreads = threads;
        if (Quantc.Core.Runtime.CustomOps.IsUsedBy(ir)) Quantc.Core.Runtime.CustomOps.Register(so);
        var session = new InferenceSession(path, so);
        string ops;
        using (var opt = Model.Load(optimized))
            ops = $"{opt.Graph.Nodes.Count()} nodes: " + string.Join(", ", opt.Graph.Nodes.GroupBy(n => n.IsOnnxDomain ? n.OpType : $"{n.Domain}.{n.OpType}").OrderByDescending(g => g.Count()).Take(6).Select(g => $"{g.Key} {g.Count()}"));
        foreach (var f in Directory.GetFiles(System.IO.Path.GetDirectoryName(optimized)!, System.IO.Path.GetFileName(optimized) + "*")) File.Delete(f);

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
                    long count = dims.Aggregate(1L, (a, b) => a * b);
                    // A cache stored as integers (quantize_kv storage: native): int8 zeros, or uint8 0x88 (two 4-bit zeros).
                    list.Add((v.Name, v.ElementType switch
                    {
                        3 => OrtValue.CreateTensorValueFromMemory(new sbyte[count], dims),
                        2 => OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat((byte)0x88, (int)count).ToArray(), dims),
                        _ => OrtValue.CreateTensorValueFromMemory(new float[count], dims),
                    }));
                }
            }
            return list;
        }
        long bytes = new FileInfo(path).Length + (File.Exists(path + ".data") ? new FileInfo(path + ".data").Length : 0);
        var decode = Feed(1, tokens);
        OrtIoBinding? binding = null;
        if (sharedCache && Shares(ir))
        {
            // One buffer of tokens + 1 rows per cache tensor, bound as past_key_values.* and as the matching present.*: the
            // step attends to the tokens cached rows and writes its row into the last one, as GenAI's shared buffer does.
            binding = session.CreateIoBinding();
            var boundOutputs = new List<string>();
            foreach (var (name, value) in Feed(1, tokens + 1))
            {
                if (name.StartsWith("past_key_values.", StringComparison.Ordinal))
                {
                    binding.BindInput(name, value);
                    binding.BindOutput("present." + name["past_key_values.".Length..], value);
                    boundOutputs.Add("present." + name["past_key_values.".Length..]);
                }
                else binding.BindInput(name, decode.Single(x => x.Item1 == name).Item2);
            }
            using var cpu = new OrtMemoryInfo(OrtMemoryInfo.allocatorCPU, OrtAllocatorType.ArenaAllocator, 0, OrtMemType.Default);
            foreach (var output in session.OutputNames.Where(o => !o.StartsWith("present.", StringComparison.Ordinal)))
            {
                binding.BindOutputToDevice(output, cpu);
                boundOutputs.Add(output);
            }
            // The bound step must compute what the plain one does (the same cached rows, the same new row).
            using var ro = new RunOptions();
            using var plain = session.Run(ro, decode.Select(x => x.Item1).ToList(), decode.Select(x => x.Item2).ToList(), ["logits"]);
            session.RunWithBinding(ro, binding);
            using var bound = binding.GetOutputValues();
            int at = boundOutputs.IndexOf("logits");  // GetOutputValues: in the order bound
            var want = plain[0].GetTensorDataAsSpan<float>();
            var got = bound.ElementAt(at).GetTensorDataAsSpan<float>();
            double worst = 0, scale = 0;
            for (int i = 0; i < want.Length; i++) { worst = Math.Max(worst, Math.Abs(want[i] - got[i])); scale = Math.Max(scale, Math.Abs(want[i])); }
            if (want.Length != got.Length || worst > 1e-4 * Math.Max(scale, 1))
                throw new InvalidOperationException($"{path}: the shared-cache decode step's logits differ from the plain step's by {worst}");
        }
        return new Bench { Path = path, Ir = ir, Session = session, PrefillFeed = Feed(tokens, 0), DecodeFeed = decode, Ops = ops, Bytes = bytes,
            Binding = binding };
    }

    /// <summary>Whether GenAI would share one cache buffer for this model (quantc's GenAI config decides it the same way).</summary>
    static bool Shares(Model ir)
    {
        // (The context length does not matter here: a hint for graphs that do not show it.)
        try { return Quantc.Genai.DecoderShape.Of(ir, contextHint: 1 << 20).SharesCache; }
        catch (Quantc.Onnx.BadInputException) { return false; }
    }
}
