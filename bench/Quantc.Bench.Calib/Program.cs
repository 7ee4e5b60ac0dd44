// Calibration throughput vs plain ONNX Runtime inference on the same data (goal ≥ 0.8×), and peak
// RSS of a calibration over many samples (statistics are streaming: memory must not grow with the
// sample count). Usage: dotnet run -c Release -- [--size small] [--samples 64] [--seq 512] [--rss-samples 512]
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Models;

string Arg(string name, string fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback; }
string size = Arg("--size", "small");
int samples = int.Parse(Arg("--samples", "32"), CultureInfo.InvariantCulture);
int seq = int.Parse(Arg("--seq", "512"), CultureInfo.InvariantCulture);
int rssSamples = int.Parse(Arg("--rss-samples", "512"), CultureInfo.InvariantCulture);
var inv = CultureInfo.InvariantCulture;

static long PeakRssKb() => long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)).Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture);

var dir = Directory.CreateTempSubdirectory("quantc-calib-bench");
try
{
    string path = Path.Combine(dir.FullName, $"llama-{size}.onnx");
    var build = Stopwatch.StartNew();
    ReferenceModels.BuildAndSave("llama", size, 0, "torch", path);
    Console.WriteLine(string.Create(inv, $"# llama-{size}: {ReferenceModels.ParameterCount("llama", size) / 1e6:0.0} M parameters, built in {build.Elapsed.TotalSeconds:0.0} s"));
    using var model = Model.Load(path);
    string text = Path.Combine(AppContext.BaseDirectory, "calib.txt");
    var data = DataLoader.Load(model, text, new DataOptions { SplitDocuments = false, SequenceLength = seq, MaxSamples = samples });
    var tensors = model.Graph.Nodes.Where(n => n.Is("MatMul") && n.Inputs[1]?.IsInitializer == true && n.Inputs[0] is { IsInitializer: false })
        .Select(n => n.Inputs[0]!.Name).Distinct().ToList();
    Console.WriteLine($"# data: {data.Description}; {tensors.Count} tensors observed");

    // Plain inference: the same session settings, outputs only.
    using (var session = OrtModel.CreateSession(model))
    {
        var outNames = model.Graph.Outputs.Select(v => v.Name).ToList();
        void RunAll()
        {
            foreach (var s in data.Samples)
            {
                var inputs = CalibrationInputs.ToOrt(s);
                using var ro = new RunOptions();
                using var o = session.Run(ro, inputs.Select(x => x.Name).ToArray(), inputs.Select(x => x.Value).ToArray(), outNames);
                foreach (var (_, v) in inputs) v.Dispose();
            }
        }
        RunAll(); // warm-up
        var sw = Stopwatch.StartNew();
        // The same runs with the observed tensors as extra outputs but no statistics: the cost of exposing them.
        using (var exposed = OrtModel.CreateSession(model, tensors))
        {
            var names = outNames.Concat(tensors).ToList();
            var swx = Stopwatch.StartNew();
            foreach (var s in data.Samples)
            {
                var inputs = CalibrationInputs.ToOrt(s);
                using var ro = new RunOptions();
                using var o = exposed.Run(ro, inputs.Select(x => x.Name).ToArray(), inputs.Select(x => x.Value).ToArray(), tensors);
                foreach (var (_, v) in inputs) v.Dispose();
            }
            Console.WriteLine(string.Create(inv, $"ORT with {tensors.Count} tensors exposed, no statistics: {swx.Elapsed.TotalSeconds:0.00} s"));
        }
        Calibrator.Collect(model, tensors, data.Samples.Take(2).ToList()); // warm-up
        // Alternate the two, three rounds each, and take the medians (robust to other load on the machine).
        var plainTimes = new List<double>();
        var calibTimes = new List<double>();
        Dictionary<string, TensorStats> stats = [];
        for (int round = 0; round < 3; round++)
        {
            sw.Restart();
            RunAll();
            plainTimes.Add(sw.Elapsed.TotalSeconds);
            sw.Restart();
            stats = Calibrator.Collect(model, tensors, data.Samples);
            calibTimes.Add(sw.Elapsed.TotalSeconds);
        }
        double plain = plainTimes.Order().ElementAt(1);
        double calib = calibTimes.Order().ElementAt(1);
        long tokens = (long)samples * seq;
        Console.WriteLine(string.Create(inv, $"plain ORT inference: {plain:0.00} s ({tokens / plain:0} tokens/s)"));
        Console.WriteLine(string.Create(inv, $"calibration:         {calib:0.00} s ({tokens / calib:0} tokens/s), {stats.Count} tensors → {plain / calib:0.00}× of plain inference"));
    }

    // Peak RSS: many short samples; memory must stay flat.
    var many = DataLoader.Load(model, text, new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = rssSamples });
    long before = PeakRssKb();
    var sw2 = Stopwatch.StartNew();
    Calibrator.Collect(model, tensors, many.Samples.Take(many.Samples.Count / 8).ToList());
    long afterEighth = PeakRssKb();
    Calibrator.Collect(model, tensors, many.Samples);
    long after = PeakRssKb();
    Console.WriteLine(string.Create(inv, $"peak RSS: {before / 1024.0:0} MiB before, {afterEighth / 1024.0:0} MiB after {many.Samples.Count / 8} samples, {after / 1024.0:0} MiB after {many.Samples.Count} samples × 64 tokens ({sw2.Elapsed.TotalSeconds:0.0} s)"));
}
finally
{
    dir.Delete(recursive: true);
}
