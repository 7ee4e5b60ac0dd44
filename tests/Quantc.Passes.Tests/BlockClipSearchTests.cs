using System.Globalization;
using System.Text.RegularExpressions;
using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>clip_search with scope: block — PrefixQuant's block-wise search on the LLaMA decoder blocks.</summary>
public sealed class BlockClipSearchTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-blockclip");

    public void Dispose() => _dir.Delete(recursive: true);

    private static readonly Regex Line = new(@"^clip_search \(block\): (model\.layers\.\d+): clip ratios q/k/v ([\d.]+), o ([\d.]+), " +
        @"gate/up ([\d.]+), down ([\d.]+); block output error (\S+) → (\S+) \(.*float C# block vs ONNX Runtime (\S+)",
        RegexOptions.CultureInvariant);

    /// <summary>
    /// The tiny llama (engineered spikes) with the PrefixQuant transforms (rotations, online Hadamard on down_proj, the prefix in
    /// the cache) and min-max static int8 ranges: the C# block reproduces ONNX Runtime's block output (≤ 1e-4 of the block's
    /// contribution) in every block, every block's error does not grow, the spike blocks' ranges are clipped, each layer's range is
    /// its min-max range times its input's ratio, and the lowered model loads and runs in ONNX Runtime. With <c>portable</c> the
    /// online Hadamards are MatMuls by constants, and R3 (rotate_qk) holds the key cache — the prefix keys included — rotated.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SearchesEveryBlockWithThePrefixAndTheOutputRuns(bool portable)
    {
        using var a = LoadLlama(_dir, "torch");
        using var b = LoadLlama(_dir, "torch");
        var calib = Quantc.Core.Data.DataLoader.Load(a, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new Quantc.Core.Data.DataOptions { SequenceLength = 64, MaxSamples = 3, Bos = false }).Samples;
        string head = "passes: [{fold_norm: {untie: true}}, rotate_residual, rotate_head" +
            (portable ? ", {rotate_qk: {portable: true}}, {online_hadamard: {portable: true}}" : ", online_hadamard") +
            ", prefix_tokens, {quantize: {weights: int8, activations: int8, mode: static}}, {ranges: {method: minmax}}";
        var plain = TestCompiler.Compile(a, head + "]", calib).Context.Plan;
        var ctx = TestCompiler.Compile(b, head + ", {clip_search: {scope: block, samples: 3}}, weights, lower_qdq]", calib).Context;
        var lines = ctx.Log.Where(l => l.StartsWith("clip_search (block): model.", StringComparison.Ordinal)
            && l.Contains(": clip ratios ", StringComparison.Ordinal)).ToList();
        foreach (var l in ctx.Log.Where(l => l.StartsWith("clip_search", StringComparison.Ordinal))) log.WriteLine(l);
        Assert.Equal(4, lines.Count);
        // The portable Hadamard MatMuls are linear layers of the map (quantized too): outside the blocks, their ranges are kept.
        Assert.Equal(portable ? 12 : 0, ctx.Log.Count(l => l.StartsWith("clip_search (block): ", StringComparison.Ordinal)
            && l.EndsWith(" is in no decoder block: its range is kept", StringComparison.Ordinal)));
        var inv = CultureInfo.InvariantCulture;
        string[][] roles = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]];
        int clipped = 0;
        foreach (var line in lines)
        {
            var m = Line.Match(line);
            Assert.True(m.Success, line);
            Assert.Contains("prefix 1)", line, StringComparison.Ordinal);
            Assert.True(double.Parse(m.Groups[8].Value, inv) <= 1e-4, line);
            Assert.True(double.Parse(m.Groups[7].Value, inv) <= double.Parse(m.Groups[6].Value, inv), line);
            string block = m.Groups[1].Value;
            for (int j = 0; j < 4; j++)
            {
                double ratio = double.Parse(m.Groups[2 + j].Value, inv);
                if (ratio < 1) clipped++;
                foreach (var role in roles[j])
                {
                    string name = $"{block}.{(j < 2 ? "self_attn" : "mlp")}.{role}";
                    var (lo, hi) = plain[name].ActivationRange!.Value;
                    var (clo, chi) = ctx.Plan[name].ActivationRange!.Value;
                    Assert.Equal(lo * ratio, clo, 1e-4 * Math.Abs(lo) + 1e-6);
                    Assert.Equal(hi * ratio, chi, 1e-4 * Math.Abs(hi) + 1e-6);
                }
            }
        }
        Assert.True(clipped > 0, "min-max ranges under the engineered spikes: some input should be clipped");
        Assert.Contains(ctx.Log, l => l.StartsWith($"clip_search (block): {clipped} of 16 inputs clipped", StringComparison.Ordinal));
        using var compiled = Model.Load(Save(_dir, b));
        using var s = OrtModel.CreateSession(compiled);
        var logits = Outputs(s, CalibrationInputs.FromTokens(compiled.Graph, EvalTokens(compiled, 1, 24)[0]))["logits"];
        Assert.Equal(24 * 257, logits.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>block_weights: rtn — the blocks compute with int4 (group 32) weights rounded to nearest: the weight rounding alone
    /// costs each block a measurable error (a float computation would give ~1e-13), said per block and in the summary.</summary>
    [Fact]
    public void RoundedWeightsAreWhatTheBlocksComputeWith()
    {
        using var m = LoadLlama(_dir, "torch");
        var ctx = RunRecipe(m, "passes: [{quantize: {weights: int4, granularity: per_group, group_size: 32, activations: int8, " +
            "mode: static}}, ranges, {clip_search: {scope: block, samples: 2, block_weights: rtn}}]", Calibration(m, 2));
        var lines = ctx.Log.Where(l => l.StartsWith("clip_search (block): model.", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, lines.Count);
        foreach (var line in lines)
        {
            log.WriteLine(line);
            var r = Regex.Match(line, @"; rounded weights alone (\S+)");
            Assert.True(r.Success, line);
            Assert.True(double.Parse(r.Groups[1].Value, CultureInfo.InvariantCulture) > 1e-6, line);
            Assert.Contains("prefix 0)", line, StringComparison.Ordinal);
        }
        Assert.Contains(ctx.Log, l => l.StartsWith("clip_search (block): ", StringComparison.Ordinal)
            && l.EndsWith("computed with weights rounded to nearest on their planned grids on the float model's block inputs",
                StringComparison.Ordinal));
    }

    /// <summary>block_inputs: quantized — each block after the first is searched on the previous block's output at its chosen
    /// ratios, so the first block's search is the float-input one and the later blocks' starting errors differ from it.</summary>
    [Fact]
    public void QuantizedInputsChainTheBlocks()
    {
        using var a = LoadLlama(_dir, "torch");
        using var b = LoadLlama(_dir, "torch");
        var calib = Calibration(a, 2);
        const string head = "passes: [{quantize: {weights: int8, activations: int8, mode: static}}, {ranges: {method: minmax}}, " +
            "{clip_search: {scope: block, samples: 2";
        var plain = BlockLines(RunRecipe(a, head + "}}]", calib));
        var ctx = RunRecipe(b, head + ", block_inputs: quantized}}]", calib);
        var chained = BlockLines(ctx);
        Assert.Equal(4, chained.Count);
        Assert.Equal(plain[0], chained[0]);
        for (int i = 1; i < 4; i++) Assert.NotEqual(StartError(plain[i]), StartError(chained[i]));
        Assert.Contains(ctx.Log, l => l.EndsWith("on the quantized model's block inputs", StringComparison.Ordinal));
    }

    private static List<string> BlockLines(Quantc.Core.Pipeline.PassContext ctx) =>
        ctx.Log.Where(l => l.StartsWith("clip_search (block): model.", StringComparison.Ordinal)
            && l.Contains(": clip ratios ", StringComparison.Ordinal)).ToList();

    private static string StartError(string line) => Regex.Match(line, @"block output error (\S+) →").Groups[1].Value;

    /// <summary>OPT's decoder layers (fc1/fc2, LayerNorm, no RoPE) are not LLaMA blocks: refused with the reason.</summary>
    [Fact]
    public void AModelWithoutLlamaBlocksIsRefused()
    {
        var path = Path.Combine(_dir.FullName, "opt.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave("opt", "tiny", 0, "torch", path);
        using var m = Model.Load(path);
        var e = Assert.Throws<BadInputException>(() => RunRecipe(m,
            "passes: [{quantize: {weights: int8, activations: int8, mode: static}}, ranges, {clip_search: {scope: block}}]",
            Calibration(m, 1)));
        log.WriteLine(e.Message);
        Assert.StartsWith("clip_search (block): ", e.Message, StringComparison.Ordinal);
        Assert.Contains("LLaMA", e.Message, StringComparison.Ordinal);
    }
}
