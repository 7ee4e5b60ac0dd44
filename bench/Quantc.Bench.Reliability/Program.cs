using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

// Issue 22's acceptance table. Each case of the reliability probe runs the quantc CLI as its own process in a scratch folder;
// the table gives the exit code (against the expected one), stderr's first line and line count, and every file the run created,
// changed or removed (sizes and SHA-256 before and after). Exit 1 when a case does not behave as expected.
//
//   dotnet run -c Release --project bench/Quantc.Bench.Reliability -- [QUANTC_BINARY] [TABLE.md]
//
// QUANTC_BINARY defaults to .build/quantc/quantc (what ./quantc builds); run from the repository root.
string repo = Directory.GetCurrentDirectory();
string quantc = Path.GetFullPath(args.ElementAtOrDefault(0) ?? Path.Combine(repo, ".build/quantc/quantc"));
string? tableOut = args.ElementAtOrDefault(1);
if (!File.Exists(quantc)) { Console.Error.WriteLine($"no quantc binary at {quantc}: run ./quantc --help first"); return 2; }
var w = Directory.CreateTempSubdirectory("quantc-reliability").FullName;
try
{
    var f = new Fixtures(repo, w);
    var rows = new List<string>();
    int failed = 0;
    foreach (var c in Cases.All(f))
    {
        var before = Snapshot(w);
        var sw = Stopwatch.StartNew();
        var (code, stdout, stderr) = Run(quantc, w, c.Args);
        sw.Stop();
        var changed = Diff(before, Snapshot(w));
        string? extra = c.Check?.Invoke(stdout, stderr);
        bool ok = code == c.Expected && extra is null && (c.MayWrite || changed.Count == 0)
            && (code == 0 || stderr.TrimEnd('\n').Split('\n').Length == 1);
        if (!ok) failed++;
        var lines = stderr.TrimEnd('\n').Split('\n');
        string first = lines[0].Replace(w, "W", StringComparison.Ordinal);
        if (first.Length > 150) first = first[..150] + "…";
        rows.Add($"| {c.Item} | {Md(c.What)} | {code} | {c.Expected} | {Md(first)} | {(stderr.Length == 0 ? 0 : lines.Length)} | " +
            $"{Md(changed.Count == 0 ? "none" : string.Join(", ", changed))} | {(ok ? "yes" : "**no**" + (extra is null ? "" : ": " + Md(extra)))} |");
        Console.Error.WriteLine($"{c.Item,-4} {(ok ? "ok  " : "FAIL")} exit {code} in {sw.Elapsed.TotalSeconds:0.0} s  {c.What}");
        f.Reset();
    }
    var table = new StringBuilder();
    table.AppendLine("| item | case | exit | expected | stderr, first line | stderr lines | files changed | as expected |");
    table.AppendLine("|---|---|---:|---:|---|---:|---|---|");
    foreach (var r in rows) table.AppendLine(r);
    table.AppendLine();
    table.AppendLine($"{rows.Count - failed} of {rows.Count} cases as expected.");
    Console.Write(table);
    if (tableOut is not null) File.WriteAllText(tableOut, table.ToString());
    return failed == 0 ? 0 : 1;
}
finally
{
    Directory.Delete(w, recursive: true);
}

static string Md(string s) => s.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);

static (int Code, string Out, string Err) Run(string exe, string dir, IReadOnlyList<string> args)
{
    var psi = new ProcessStartInfo(exe) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
    foreach (var a in args) psi.ArgumentList.Add(a);
    psi.Environment["NO_COLOR"] = "1";
    using var p = Process.Start(psi)!;
    var so = p.StandardOutput.ReadToEndAsync();
    var se = p.StandardError.ReadToEndAsync();
    if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(entireProcessTree: true); return (-1, so.Result, "timed out after 5 minutes"); }
    return (p.ExitCode, so.Result, se.Result);
}

static Dictionary<string, string> Snapshot(string root)
{
    var d = new Dictionary<string, string>(StringComparer.Ordinal);
    foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
    {
        var info = new FileInfo(path);
        string rel = Path.GetRelativePath(root, path);
        if (info.LinkTarget is { } target) { d[rel] = "link:" + target; continue; }
        if (Directory.Exists(path)) { d[rel] = "dir"; continue; }
        using var s = File.OpenRead(path);
        d[rel] = $"{info.Length}:{Convert.ToHexString(SHA256.HashData(s))[..16]}";
    }
    return d;
}

static List<string> Diff(Dictionary<string, string> a, Dictionary<string, string> b) =>
    b.Where(kv => !a.ContainsKey(kv.Key)).Select(kv => "+" + kv.Key)
        .Concat(b.Where(kv => a.TryGetValue(kv.Key, out var v) && v != kv.Value).Select(kv => "~" + kv.Key))
        .Concat(a.Keys.Where(k => !b.ContainsKey(k)).Select(k => "−" + k)).Order(StringComparer.Ordinal).ToList();

/// <summary>A case: the issue's item, what it does, the CLI arguments, the expected exit code, whether it may write files (a
/// successful compile), and an extra check of the output (null when it holds, else what is wrong).</summary>
sealed record Case(string Item, string What, string[] Args, int Expected, bool MayWrite = false, Func<string, string, string?>? Check = null);

/// <summary>The scratch folder's inputs, rebuilt after each case.</summary>
sealed class Fixtures
{
    public string W { get; }
    private readonly string _repo;

    public Fixtures(string repo, string w)
    {
        _repo = repo;
        W = w;
        Reset();
    }

    public string P(string name) => Path.Combine(W, name);

    /// <summary>Every input as the first case found it; outputs of earlier cases removed.</summary>
    public void Reset()
    {
        foreach (var e in Directory.EnumerateFileSystemEntries(W))
        {
            if (new FileInfo(e).LinkTarget is not null || File.Exists(e)) File.Delete(e);
            else Directory.Delete(e, recursive: true);
        }
        string tiny = Path.Combine(_repo, "models/tiny-llama.onnx");
        File.Copy(tiny, P("m.onnx"));
        File.Copy(Path.Combine(_repo, "models/calib.txt"), P("calib.txt"));
        Directory.CreateDirectory(P("sub"));
        Directory.CreateDirectory(P("folder"));
        File.CreateSymbolicLink(P("link.onnx"), P("m.onnx"));
        File.WriteAllText(P("victim.txt"), "a file the user cares about\n");
        File.CreateSymbolicLink(P("report-link.json"), P("victim.txt"));
        Directory.CreateDirectory(P("ext"));
        using (var m = Model.Load(tiny)) m.Save(P("ext/m.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 4096 });
        using (var m = Model.Load(tiny))
        {
            var w = m.Graph.Nodes.First(n => n.OpType == "MatMul" && n.Inputs[1] is { IsInitializer: true }).Inputs[1]!;
            var x = w.Initializer!.ToFloat32();
            x[0] = float.NaN;
            m.Graph.SetInitializer(w, Tensor.FromFloats(w.Name, w.Initializer.Dims, x));
            m.Save(P("nan.onnx"));
        }
        using (var m = Model.Load(tiny))
        {
            m.Graph.Nodes.First().Name = "\u001b[2J\u001b[31mred";
            m.Save(P("escape.onnx"));
        }
        WriteProto(tiny, "cyclic.onnx", p =>
        {
            // The first node reads the last node's output: a cycle the IR refuses to build, so edited in the protobuf.
            var last = p.Graph.Node[^1];
            p.Graph.Node[0].Input[0] = last.Output[0];
        });
        WriteProto(tiny, "negdim.onnx", p => p.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimValue = -3);
        WriteProto(P("ext/m.onnx"), "ext/dirdata.onnx", p =>
        {
            var t = p.Graph.Initializer.First(i => i.ExternalData.Count > 0);
            t.ExternalData.First(e => e.Key == "location").Value = "folder-data";
        });
        Directory.CreateDirectory(P("ext/folder-data"));
        WriteProto(tiny, "rank.onnx", p => p.Graph.Output[0].Type.TensorType.Shape.Dim.RemoveAt(0));
        File.WriteAllText(P("laughs.yaml"), "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\npasses: [ { smooth: { exclude: *c } } ]\n");
        File.WriteAllText(P("deep.yaml"), "passes: " + new string('[', 100_000) + new string(']', 100_000) + "\n");
        File.WriteAllText(P("syntax.yaml"), "passes: [\n");
        File.WriteAllText(P("nonscalar.yaml"), "passes:\n  - {[a]: 1}\n");
        File.WriteAllText(P("group0.yaml"), "passes: [ { weights: { bits: 4, group_size: 0 } }, ranges, quantize, lower_qdq ]\n");
        File.WriteAllText(P("groupneg.yaml"), "passes: [ { weights: { bits: 4, group_size: -32 } }, ranges, quantize, lower_qdq ]\n");
        File.WriteAllText(P("regex.yaml"), "passes: [ { smooth: { layers: '(x' } } ]\n");
        File.WriteAllText(P("alpha.yaml"), "passes: [ { smooth: { alpha: .nan } } ]\n");
        File.WriteAllText(P("percentile.yaml"), "passes: [ { ranges: { percentile: 200 } } ]\n");
        File.WriteAllText(P("order.yaml"), "passes: [ quantize, lower_qdq, weights ]\n");
        File.WriteAllText(P("oov.jsonl"), "[256, 72, 257]\n");
        File.WriteAllText(P("huge.jsonl"), $"[256, {long.MaxValue}]\n");
        File.WriteAllText(P("neg.jsonl"), "[256, 72, -5, 10]\n");
        File.WriteAllText(P("text.npy"), "\u0093NUMPY\u0001\u0000v\u0000{'descr': '<i8', 'fortran_order': False, 'shape': ('a', 3), }");
        Quantc.Core.Data.Npy.Write(P("negshape.npy"), new long[] { 256, 1, 3 }, [1, 3]);
        var bytes = File.ReadAllBytes(P("negshape.npy"));
        var header = Encoding.ASCII.GetString(bytes, 10, bytes.Length - 10);
        File.WriteAllBytes(P("negshape.npy"), [.. bytes[..10], .. Encoding.ASCII.GetBytes(header.Replace("(1, 3)", "(-1, 3)",
            StringComparison.Ordinal))]);
    }

    private void WriteProto(string from, string to, Action<ModelProto> edit)
    {
        var p = ModelProto.Parser.ParseFrom(File.ReadAllBytes(from));
        edit(p);
        File.WriteAllBytes(P(to), Google.Protobuf.MessageExtensions.ToByteArray(p));
    }
}

static class Cases
{
    /// <summary>Whether <paramref name="path"/> is a character device (<c>test -c</c>).</summary>
    private static bool IsCharDevice(string path)
    {
        var psi = new ProcessStartInfo("/usr/bin/test");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    private static readonly string[] Fast = ["--recipe", "w8a8", "--samples", "2", "--seq-len", "32", "--no-verify"];

    public static IEnumerable<Case> All(Fixtures f)
    {
        string m = f.P("m.onnx"), q = f.P("q.onnx"), calib = f.P("calib.txt");
        string[] C(params string[] extra) => ["compile", m, "--calib", calib, .. Fast, .. extra];
        yield return new("1", "compile -o equal to the input", C("-o", m), 2);
        yield return new("1", "-o the input respelled (sub/../m.onnx)", C("-o", f.P("sub/../m.onnx")), 2);
        yield return new("1", "-o a symlink to the input", C("-o", f.P("link.onnx")), 2);
        yield return new("1", "-o equal to an input with external data",
            ["compile", f.P("ext/m.onnx"), "--calib", calib, .. Fast, "-o", f.P("ext/m.onnx")], 2);
        yield return new("2", "--report is the input model", C("-o", q, "--report", m), 2);
        yield return new("2", "--html is the input model", C("-o", q, "--html", m), 2);
        yield return new("2", "--report equal to -o", C("-o", q, "--report", q), 2);
        yield return new("2", "--report is a symlink (to another file)", C("-o", q, "--report", f.P("report-link.json")), 2);
        yield return new("2", "verify --report is the input", ["verify", m, m, "--data", calib, "--samples", "1", "--report", m], 2);
        yield return new("2", "diff --html is the input", ["diff", m, m, "--html", m], 2);
        yield return new("2", "calibrate -o is the input", ["calibrate", m, "--calib", calib, "--samples", "1", "-o", m], 2);
        yield return new("3", "-o /dev/null", C("-o", "/dev/null"), 2, Check: (_, _) =>
            IsCharDevice("/dev/null") ? null : "/dev/null is no longer a device");
        yield return new("5", "YAML aliases (billion laughs)", ["compile", m, "--recipe", f.P("laughs.yaml"), "-o", q], 2);
        yield return new("5", "100,000 nested YAML levels", ["compile", m, "--recipe", f.P("deep.yaml"), "-o", q], 2);
        yield return new("6", "verify a NaN-weight model with a perplexity gate",
            ["verify", m, f.P("nan.onnx"), "--data", calib, "--samples", "2", "--max-ppl-increase", "0.05"], 1);
        yield return new("6", "--min-sqnr NaN", ["verify", m, m, "--data", calib, "--min-sqnr", "NaN"], 2);
        yield return new("6", "--max-ppl-increase NaN", ["verify", m, m, "--data", calib, "--max-ppl-increase", "NaN"], 2);
        yield return new("7", "--data missing: no model left behind",
            ["compile", m, "--calib", calib, "--recipe", "w8a8", "--samples", "2", "--seq-len", "32", "-o", q, "--data", f.P("missing.txt")], 2);
        yield return new("7", "--data given with --no-verify (a contradiction)", C("-o", q, "--data", calib), 2);
        yield return new("7", "unwritable --report (its parent is a file)", C("-o", q, "--report", f.P("calib.txt/r.json")), 2);
        yield return new("8", "lower_qdq before weights", ["compile", m, "--recipe", f.P("order.yaml"), "-o", q, "--no-verify"], 2);
        yield return new("9", "YAML syntax error", ["compile", m, "--recipe", f.P("syntax.yaml"), "-o", q], 2);
        yield return new("9", "non-scalar YAML key", ["compile", m, "--recipe", f.P("nonscalar.yaml"), "-o", q], 2);
        yield return new("9", "group_size: 0", ["compile", m, "--recipe", f.P("group0.yaml"), "-o", q], 2);
        yield return new("9", "negative group_size", ["compile", m, "--recipe", f.P("groupneg.yaml"), "-o", q], 2);
        yield return new("9", "invalid layers regex", ["compile", m, "--recipe", f.P("regex.yaml"), "-o", q], 2);
        yield return new("9", "out-of-vocabulary token id", ["compile", m, "--calib", f.P("oov.jsonl"), .. Fast, "-o", q], 2);
        yield return new("9", "token id 2^63−1", ["compile", m, "--calib", f.P("huge.jsonl"), .. Fast, "-o", q], 2);
        yield return new("9", "--seq-len past the model's positions",
            ["compile", m, "--calib", calib, "--recipe", "w8a8", "--samples", "1", "--seq-len", "2000", "--no-doc-split", "-o", q], 2);
        yield return new("9", ".npy with a negative shape", ["verify", m, m, "--data", f.P("negshape.npy")], 2);
        yield return new("9", ".npy with a text shape", ["verify", m, m, "--data", f.P("text.npy")], 2);
        yield return new("9", "NaN weights (compile)", ["compile", f.P("nan.onnx"), "--calib", calib, .. Fast, "-o", q], 2);
        yield return new("9", "cyclic graph", ["compile", f.P("cyclic.onnx"), "--calib", calib, .. Fast, "-o", q], 2);
        yield return new("9", "negative input dimension", ["inspect", f.P("negdim.onnx")], 2);
        yield return new("9", "verify: outputs of different rank", ["verify", m, f.P("rank.onnx"), "--data", calib, "--samples", "1"], 2);
        yield return new("9", "-o inside a file", C("-o", f.P("calib.txt/q.onnx")), 2);
        yield return new("9", "-o is a folder", C("-o", f.P("folder")), 2);
        yield return new("9", "-o \"\"", C("-o", ""), 2);
        yield return new("9", "-o name of 300 characters", C("-o", f.P(new string('n', 295) + ".onnx")), 2);
        yield return new("11", "-o name of 250 characters", C("-o", f.P(new string('n', 245) + ".onnx")), 0, MayWrite: true);
        yield return new("13", "alpha: NaN", ["compile", m, "--recipe", f.P("alpha.yaml"), "-o", q], 2);
        yield return new("13", "percentile: 200", ["compile", m, "--recipe", f.P("percentile.yaml"), "-o", q], 2);
        yield return new("14", "inspect a node named with terminal escapes", ["inspect", f.P("escape.onnx")], 0,
            Check: (o, e) => o.Contains('\u001b') || e.Contains('\u001b') ? "an escape sequence reached the terminal" : null);
        yield return new("14", "diff with terminal escapes in names", ["diff", m, f.P("escape.onnx")], 0,
            Check: (o, e) => o.Contains('\u001b') || e.Contains('\u001b') ? "an escape sequence reached the terminal" : null);
        yield return new("15", "negative token id (compile)", ["compile", m, "--calib", f.P("neg.jsonl"), .. Fast, "-o", q], 2);
        yield return new("15", "negative token id (verify)", ["verify", m, m, "--data", f.P("neg.jsonl")], 2);
        yield return new("16", "external-data location that is a folder", ["inspect", f.P("ext/dirdata.onnx")], 2,
            Check: (_, e) => e.Contains("folder", StringComparison.Ordinal) ? null : "the message does not say it is a folder");
        yield return new("ok", "a plain compile (control)", C("-o", q), 0, MayWrite: true);
    }
}
