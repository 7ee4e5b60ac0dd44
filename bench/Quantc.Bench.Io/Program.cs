// Model I/O benchmark. For each size (GiB): writes a model whose weights (16 tensors) live in one
// external data file of that size, then measures in a fresh child process each: open (Model.Load,
// i.e. read + validate + index, mapping nothing yet), save to another folder (streams every tensor
// into a new external data file), and cp of the same .data file; with peak RSS (VmHWM) of each.
// Usage: dotnet run -c Release -- [sizes in GiB, default 1 4]
using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Quantc.Ir;
using Quantc.Onnx.Proto;

var inv = CultureInfo.InvariantCulture;
static long PeakRssKb() => long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)).Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture);

if (args.Length >= 2 && args[0] == "--open")
{
    var sw = Stopwatch.StartNew();
    using var m = Model.Load(args[1]);
    double t = sw.Elapsed.TotalSeconds;
    Console.WriteLine(string.Create(inv, $"{t} {PeakRssKb()} {m.Graph.Initializers.Count}"));
    return;
}
if (args.Length >= 3 && args[0] == "--save")
{
    using var m = Model.Load(args[1]);
    var sw = Stopwatch.StartNew();
    m.Save(args[2]);
    Console.WriteLine(string.Create(inv, $"{sw.Elapsed.TotalSeconds} {PeakRssKb()}"));
    return;
}

var sizes = args.Length > 0 ? args.Select(a => double.Parse(a, inv)).ToArray() : [1.0, 4.0];
string self = Environment.ProcessPath!;
string dll = typeof(Model).Assembly.Location; // unused; the bench re-runs itself
string[] Child(params string[] a)
{
    var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true };
    if (self.EndsWith("dotnet", StringComparison.Ordinal)) psi.ArgumentList.Add(typeof(Program).Assembly.Location);
    foreach (var x in a) psi.ArgumentList.Add(x);
    using var p = Process.Start(psi)!;
    string o = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    return o.Trim().Split(' ');
}

Console.WriteLine($"# {Environment.ProcessorCount} cores; {File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("model name", StringComparison.Ordinal)).Split(':')[1].Trim()}");
Console.WriteLine("| size | tensors | open | open peak RSS | save | cp | save / cp | save peak RSS |");
Console.WriteLine("|---|---|---|---|---|---|---|---|");
foreach (double gib in sizes)
{
    var dir = Directory.CreateTempSubdirectory("quantc-io-bench");
    try
    {
        const int tensors = 16;
        long total = (long)(gib * (1L << 30));
        long per = total / tensors / 4 * 4;
        string data = Path.Combine(dir.FullName, "model.onnx.data");
        var chunk = new byte[4 << 20];
        new Random(1).NextBytes(chunk);
        using (var fs = new FileStream(data, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            for (long written = 0; written < per * tensors; written += chunk.Length)
                fs.Write(chunk, 0, (int)Math.Min(chunk.Length, per * tensors - written));
        var proto = new ModelProto { IrVersion = 10, ProducerName = "bench", Graph = new GraphProto { Name = "g" } };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        for (int i = 0; i < tensors; i++)
        {
            var t = new TensorProto { Name = $"w{i}", DataType = 1, DataLocation = TensorProto.Types.DataLocation.External };
            t.Dims.Add(per / 4);
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "model.onnx.data" });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = (i * per).ToString(inv) });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = per.ToString(inv) });
            proto.Graph.Initializer.Add(t);
            proto.Graph.Output.Add(new ValueInfoProto { Name = t.Name });
        }
        string model = Path.Combine(dir.FullName, "model.onnx");
        File.WriteAllBytes(model, proto.ToByteArray());

        var open = Child("--open", model);
        var save = Child("--save", model, Path.Combine(dir.FullName, "out", "model.onnx"));
        Directory.CreateDirectory(Path.Combine(dir.FullName, "cp"));
        var sw = Stopwatch.StartNew();
        using (var cp = Process.Start("/bin/cp", [data, Path.Combine(dir.FullName, "cp", "model.onnx.data")])) cp.WaitForExit();
        double cpTime = sw.Elapsed.TotalSeconds;
        double openT = double.Parse(open[0], inv), saveT = double.Parse(save[0], inv);
        Console.WriteLine(string.Create(inv,
            $"| {gib:0.#} GiB | {tensors} | {openT * 1000:0.0} ms | {long.Parse(open[1], inv) / 1024.0:0} MiB | {saveT:0.00} s | {cpTime:0.00} s | {saveT / cpTime:0.00}× | {long.Parse(save[1], inv) / 1024.0:0} MiB |"));
    }
    finally
    {
        dir.Delete(recursive: true);
    }
}
