// GPTQ's arithmetic at the sizes of a layer input, timed step by step: the Hessian sums 2·XᵀX over the calibration tokens
// (WeightQuantizer.AccumulateLowerHessian, one call per sample as the calibration makes them), the factor of its inverse
// (GptqFactor.Of) and the rounding of each weight that reads the input (WeightQuantizer.Gptq, int4, groups of 32). One run per
// size (each takes seconds); random inputs, a few large channels, never zeros.
// Usage: dotnet run -c Release [-- --k 2048,5632 --n 2048,256,5632 --samples 16 --seq-len 128]
// (--n: the widths of the weights rounded with each input's factor; default: a 1b LLaMA's q/k/v/o and gate/up on K = 2048,
// down_proj on K = 5632).
using System.Diagnostics;
using System.Globalization;
using Quantc.Core.Numerics;

var inv = CultureInfo.InvariantCulture;
string Arg(string name, string fallback)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : fallback;
}
int[] Ints(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => int.Parse(v, inv)).ToArray();
int samples = int.Parse(Arg("--samples", "16"), inv), seqLen = int.Parse(Arg("--seq-len", "128"), inv);
var ks = Ints(Arg("--k", "2048,5632"));
int[]? ns = args.Contains("--n") ? Ints(Arg("--n", "")) : null;

string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':')[1].Trim() ?? "?";
var flags = (File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? "").Split(' ');
string isa = string.Join(" ", new[] { "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni" }.Where(flags.Contains));
Console.WriteLine($"# CPU: {cpu}, {Environment.ProcessorCount} cores, {isa}; {samples} samples × {seqLen} tokens");
Console.WriteLine();
Console.WriteLine("| K | Hessian sums | factor | GPTQ rounding (N: s) | Hessian GFLOP/s | factor GFLOP/s |");
Console.WriteLine("|---|---|---|---|---|---|");
var rng = new Random(1);
foreach (int k in ks)
{
    var widths = ns ?? (k == 5632 ? [2048] : [2048, 256, 256, 2048, 5632, 5632]);
    var x = new float[samples * seqLen * k];
    for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * (i % k % 61 == 0 ? 20 : 1)) + 1e-3f;
    var h = new double[(long)k * k];
    var clock = Stopwatch.StartNew();
    for (int s = 0; s < samples; s++) WeightQuantizer.AccumulateLowerHessian(h, x.AsSpan(s * seqLen * k, seqLen * k), k);
    double hessian = clock.Elapsed.TotalSeconds;
    clock.Restart();
    var factor = GptqFactor.Of(h, k, 0.01);
    double factorTime = clock.Elapsed.TotalSeconds;
    var rounding = new List<string>();
    foreach (int n in widths)
    {
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
        clock.Restart();
        WeightQuantizer.Gptq(w, n, k, factor, QuantFormat.Int4, 32);
        rounding.Add($"{n}: {clock.Elapsed.TotalSeconds:0.00}");
    }
    // The Hessian's lower triangle: K²/2 multiply-adds per token; the factor: four K³/6 multiply-add steps.
    double hessianFlops = (double)k * k * samples * seqLen, factorFlops = 4.0 * k * k * k / 3;
    Console.WriteLine($"| {k} | {hessian:0.00} s | {factorTime:0.00} s | {string.Join(", ", rounding)} | " +
        $"{hessianFlops / hessian / 1e9:0.0} | {factorFlops / factorTime / 1e9:0.0} |");
}
