// Model I/O benchmark. For each size (GiB): writes a model whose weights (16 tensors) live in one
// external data file of that size (streamed to disk, never in memory), then measures, each in a fresh
// child process: open (Model.Load, i.e. read + validate + index, mapping nothing yet) and save to
// another folder (streams every tensor into a new external data file, fsync'd, renamed into place),
// with the peak RSS (VmHWM) of each child; and /bin/cp of the same .data file, alone and followed by
// an fsync of the copy (the durability the writer gives). Medians of --reps runs (default 3).
// Usage: dotnet run -c Release -- [--reps N] [sizes in GiB, default 1 4]
//        dotnet run -c Release -- --make FOLDER GIB      (just write the model)
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
if (args.Length >= 3 && args[0] == "--make")
{
    Console.WriteLine(MakeModel(args[1], double.Parse(args[2], inv), 16));
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

var rest = args.ToList();
int reps = 3;
if (rest.IndexOf("--reps") is int ri and >= 0) { reps = int.Parse(rest[ri + 1], inv); rest.RemoveRange(ri, 2); }
var sizes = rest.Count > 0 ? rest.Select(a => double.Parse(a, inv)).ToArray() : [1.0, 4.0];
string self = Environment.ProcessPath!;
string[] Child(params string[] a)
{
    var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true };
    if (self.EndsWith("dotnet", StringComparison.Ordinal)) psi.ArgumentList.Add(typeof(Program).Assembly.Location);
    foreach (var x in a) psi.ArgumentList.Add(x);
    using var p = Process.Start(psi)!;
    string o = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"child {string.Join(' ', a)} failed with {p.ExitCode}");
    return o.Trim().Split(' ');
}
static double Timed(string program, params string[] a)
{
    var sw = Stopwatch.StartNew();
    using var p = Process.Start(program, a);
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"{program} failed with {p.ExitCode}");
    return sw.Elapsed.TotalSeconds;
}
static double Median(List<double> xs) { xs.Sort(); return xs[xs.Count / 2]; }

string cpu = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("model name", StringComparison.Ordinal)).Split(':')[1].Trim();
string ram = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(':')[1].Trim();
Console.WriteLine($"# {Environment.ProcessorCount} cores; {cpu}; MemTotal {ram}; temp folder {Path.GetTempPath()}; medians of {reps} runs");
Console.WriteLine("| size | tensors | open | open peak RSS | save (fsync'd) | cp | cp + fsync | save / cp | save / (cp + fsync) | save peak RSS |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
foreach (double gib in sizes)
{
    var dir = Directory.CreateTempSubdirectory("quantc-io-bench");
    try
    {
        const int tensors = 16;
        string model = MakeModel(dir.FullName, gib, tensors);
        string data = model + ".data";

        List<double> openT = [], saveT = [], cpT = [], cpSyncT = [];
        long openRss = 0, saveRss = 0;
        // Each measurement starts with no dirty pages left by the one before (a global sync, not timed):
        // otherwise whichever runs right after a big write pays for the kernel's write-back of it.
        void Settle() => Timed("/usr/bin/sync");
        string outDir = Path.Combine(dir.FullName, "out"), cpDir = Path.Combine(dir.FullName, "cp");
        string copy = Path.Combine(cpDir, "model.onnx.data");
        void MeasureSave()
        {
            var save = Child("--save", model, Path.Combine(outDir, "model.onnx"));
            saveT.Add(double.Parse(save[0], inv));
            saveRss = Math.Max(saveRss, long.Parse(save[1], inv));
            Directory.Delete(outDir, recursive: true);
        }
        void MeasureCp()
        {
            Directory.CreateDirectory(cpDir);
            cpT.Add(Timed("/bin/cp", data, copy));
            Directory.Delete(cpDir, recursive: true);
        }
        void MeasureCpSync()
        {
            // cp, then an fsync of the copy (coreutils sync with a file argument): the durability the writer gives.
            Directory.CreateDirectory(cpDir);
            var sw = Stopwatch.StartNew();
            Timed("/bin/cp", data, copy);
            Timed("/usr/bin/sync", copy);
            cpSyncT.Add(sw.Elapsed.TotalSeconds);
            Directory.Delete(cpDir, recursive: true);
        }
        Action[] copies = [MeasureSave, MeasureCp, MeasureCpSync];
        for (int r = 0; r < reps; r++)
        {
            Settle();
            var open = Child("--open", model);
            openT.Add(double.Parse(open[0], inv));
            openRss = Math.Max(openRss, long.Parse(open[1], inv));
            // The three copies in a rotating order, so that none always runs first or after the same one.
            for (int k = 0; k < copies.Length; k++)
            {
                Settle();
                copies[(r + k) % copies.Length]();
            }
            Console.Error.WriteLine(string.Create(inv, $"  {gib:0.#} GiB run {r + 1}: open {openT[^1] * 1000:0.0} ms, save {saveT[^1]:0.00} s, cp {cpT[^1]:0.00} s, cp + fsync {cpSyncT[^1]:0.00} s"));
        }
        double o = Median(openT), s = Median(saveT), c = Median(cpT), cs = Median(cpSyncT);
        Console.WriteLine(string.Create(inv,
            $"| {gib:0.#} GiB | {tensors} | {o * 1000:0.0} ms | {openRss / 1024.0:0} MiB | {s:0.00} s | {c:0.00} s | {cs:0.00} s | {s / c:0.00}× | {s / cs:0.00}× | {saveRss / 1024.0:0} MiB |"));
    }
    finally
    {
        dir.Delete(recursive: true);
    }
}

// Writes model.onnx whose float tensors live in model.onnx.data (gib GiB in all) into folder.
static string MakeModel(string folder, double gib, int tensors)
{
    var inv = CultureInfo.InvariantCulture;
    long total = (long)(gib * (1L << 30));
    long per = total / tensors / 4 * 4;
    // The external data file is streamed to disk in 4 MiB chunks: the model is never in memory.
    string data = Path.Combine(folder, "model.onnx.data");
    var chunk = new byte[4 << 20];
    new Random(1).NextBytes(chunk);
    using (var fs = new FileStream(data, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
    {
        for (long written = 0; written < per * tensors; written += chunk.Length)
            fs.Write(chunk, 0, (int)Math.Min(chunk.Length, per * tensors - written));
        fs.Flush(flushToDisk: true);
    }
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
    string model = Path.Combine(folder, "model.onnx");
    File.WriteAllBytes(model, proto.ToByteArray());
    return model;
}
