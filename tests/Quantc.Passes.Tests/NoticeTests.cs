using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// Issue 15's defects on the reference LLaMA (down_proj K = 344): int4 per-channel weights, int4 groups that do not
/// divide K, and methods that find nothing to do saying so with the measured figure.
/// </summary>
public sealed class NoticeTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-notices");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Load(string flavor = "torch")
    {
        var path = Path.Combine(_dir.FullName, $"llama-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, flavor, path);
        return Model.Load(path);
    }

    private static LoadedData Data(Model m, string file, int n) =>
        DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, file), new DataOptions { SequenceLength = 64, MaxSamples = n });

    /// <summary>Defect 1: int4 per-channel weights lower to DequantizeLinear with an axis (no block_size) and run in ONNX Runtime.</summary>
    [Fact]
    public void Int4PerChannelWeightsLowerAndRun()
    {
        using var original = Load();
        using var m = Model.Load(original.File!.Path);
        using var compiled = TestCompiler.CompileAndReload(_dir, m, """
            passes:
              - quantize: { weights: int4, granularity: per_channel, activations: fp32 }
              - weights: { method: rtn }
              - lower_qdq
            """, Data(m, "calib.txt", 4).Samples, out _);
        var dqs = compiled.Graph.AllNodes().Where(n => n.OpType == "DequantizeLinear").ToList();
        Assert.True(dqs.Count >= 20, $"only {dqs.Count} int4 layers");
        Assert.All(dqs, d => Assert.Null(d.Attributes.FirstOrDefault(a => a.Proto.Name == "block_size")));
        var eval = Data(original, "eval.txt", 2);
        var r = Verifier.Run(original, compiled, eval.Samples, eval.Tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"int4 per-channel: logits SQNR {sqnr:0.0} dB");
        Assert.True(sqnr > 5, $"logits SQNR {sqnr:0.0} dB");
    }

    [Theory]
    [InlineData(344, 32, 8)]
    [InlineData(352, 128, 32)]
    [InlineData(4096, 128, 128)]
    [InlineData(172, 32, 0)]
    [InlineData(384, 128, 128)]
    [InlineData(96, 64, 32)]
    public void GroupSizeDividesK(int k, int requested, int expected) => Assert.Equal(expected, QuantizePass.GroupSizeFor(k, requested));

    /// <summary>Defect 2: int4 layers whose K is not a multiple of the group size are quantized with a group size that divides K, and say so.</summary>
    [Fact]
    public void Int4LayersTakeAGroupSizeThatDividesK()
    {
        using var m = Load();
        var ctx = TestCompiler.Compile(m, "w4a16-rtn", Data(m, "calib.txt", 2).Samples).Context;
        var down = ctx.Plan.Layers.Where(p => p.Name.EndsWith("down_proj", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(down);
        Assert.All(down, p =>
        {
            Assert.Equal(NumberFormat.Int4, p.WeightFormat);
            Assert.Equal(8, p.GroupSize);
            Assert.Contains(p.Reasons, r => r.Contains("group size 8 instead of 32: in_features 344", StringComparison.Ordinal));
        });
        Assert.All(ctx.Plan.Layers.Where(p => p.Name != "lm_head"), p => Assert.Equal(NumberFormat.Int4, p.WeightFormat));
    }

    /// <summary>Defect 3: spike_mixed that keeps nothing says so, with the largest spike ratio against the threshold.</summary>
    [Fact]
    public void SpikeMixedThatKeepsNothingSaysWhy()
    {
        using var m = Load();
        var ctx = TestCompiler.Compile(m, """
            passes:
              - quantize: { weights: int8, activations: uint8, mode: static }
              - spike_mixed: { threshold: 100000 }
              - ranges
              - weights
              - lower_qdq
            """, Data(m, "calib.txt", 2).Samples).Context;
        var notice = Assert.Single(ctx.Notices);
        log.WriteLine(notice);
        Assert.Matches(@"^spike_mixed: no layer kept: largest input spike ratio [0-9.]+ ≤ threshold 100000 \(model\.layers\.\d+\.[a-z_.]+\)$", notice);
        Assert.Contains(notice, ctx.Log);
    }

    /// <summary>Defect 4: symmetrize on a model whose RMSNorms are fused ops (ONNX Runtime GenAI's layout) says that it skipped every
    /// norm, and what the shift would have cut (measured on the calibration data); the decomposed form is shifted (below).</summary>
    [Fact]
    public void SymmetrizeOnFusedRmsNormSaysItSkippedEveryNorm()
    {
        using var m = Load("ortgenai");
        var ctx = TestCompiler.Compile(m, "passes: [symmetrize]", Data(m, "calib.txt", 2).Samples).Context;
        var notice = Assert.Single(ctx.Notices);
        log.WriteLine(notice);
        Assert.Matches(@"^symmetrize: skipped on all \d+ norms: fused RMSNorm ops have no β.*; measured on the calibration data: a shift would " +
            @"move channel centres by up to [0-9.e+-]+ and cut the largest channel absmax by [0-9.]+ % \(model\.[a-z_.0-9]+: ", notice);
    }

    /// <summary>smooth with nothing left to smooth says so.</summary>
    [Fact]
    public void SmoothWithNothingToSmoothSaysSo()
    {
        using var m = Load();
        var ctx = TestCompiler.Compile(m, "passes: [{smooth: {exclude: ['.*']}}]", Data(m, "calib.txt", 2).Samples).Context;
        Assert.Matches(@"^smooth: nothing smoothed: the readers of all \d+ smoothable inputs are excluded$", Assert.Single(ctx.Notices));
        Assert.DoesNotContain(ctx.Plan.Layers, p => p.Transforms.Count > 0);
    }

    /// <summary>Defect 5: smooth leaves lm_head (excluded by quantize) alone, unless exclude says otherwise.</summary>
    [Theory]
    [InlineData("passes: [smooth]", false)]
    [InlineData("passes: [{smooth: {exclude: []}}]", true)]
    public void SmoothOnlySmoothsWhatWillBeQuantized(string recipe, bool lmHeadSmoothed)
    {
        using var m = Load();
        var ctx = TestCompiler.Compile(m, recipe, Data(m, "calib.txt", 2).Samples).Context;
        Assert.Equal(lmHeadSmoothed, ctx.Plan["lm_head"].Transforms.Any(t => t.StartsWith("smoothed", StringComparison.Ordinal)));
        Assert.Contains(ctx.Plan.Layers, p => p.Name.EndsWith("q_proj", StringComparison.Ordinal) && p.Transforms.Any(t => t.StartsWith("smoothed", StringComparison.Ordinal)));
        if (!lmHeadSmoothed) Assert.Contains(ctx.Log, l => l == "smooth: lm_head not smoothed: excluded (stays float)");
    }

    /// <summary>Defect 4: symmetrize gives each decomposed RMSNorm an explicit shift β = −z (an Add the map then reads as the norm's
    /// β), so the readers' input channels are centred; the readers' biases compensate (function preservation: PassTests).</summary>
    [Fact]
    public void SymmetrizeShiftsDecomposedRmsNormsThroughAnExplicitBeta()
    {
        using var m = Load();
        var data = Data(m, "calib.txt", 2).Samples;
        int norms = m.Graph.Nodes.Count(n => n.Is("ReduceMean"));
        var ctx = TestCompiler.Compile(m, "passes: [symmetrize]", data).Context;
        Assert.Empty(ctx.Notices);
        var shifted = ctx.Map.Norms.Where(n => n.Beta is not null).ToList();
        Assert.NotEmpty(shifted);
        Assert.All(shifted, n => Assert.Equal(Quantc.Ir.Analysis.NormKind.RmsNorm, n.Kind));
        Assert.All(shifted, n => Assert.True(n.Output.Producer!.Is("Add"), $"{n.Name}: its output comes from {n.Output.Producer!.OpType}"));
        Assert.Equal(norms, m.Graph.Nodes.Count(n => n.Is("ReduceMean")));
        // The shifted outputs' channel ranges are centred on the calibration data: |max + min| / 2 ≈ 0 per channel.
        var stats = ctx.Calibrate(shifted.Select(n => n.Output.Name).ToList(), "test");
        foreach (var n in shifted)
        {
            var st = stats[n.Output.Name];
            double range = st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => hi - lo).Max();
            double centre = st.ChannelMax.ToArray().Zip(st.ChannelMin.ToArray(), (hi, lo) => Math.Abs(hi + lo) / 2).Max();
            log.WriteLine($"{n.Name}: largest |centre| {centre:G3} of range {range:G3}");
            Assert.True(centre <= 1e-4 * range, $"{n.Name}: channel centre {centre} (range {range})");
        }
        Assert.Contains(ctx.Log, l => l.StartsWith("symmetrize: model.layers.0.input_layernorm: max |z|", StringComparison.Ordinal));
    }

    /// <summary>A recipe run on a model that is already quantized says so, with what it found, instead of writing the model
    /// back with "0 layers quantized"; a rotation recipe's refusal names the reason too.</summary>
    [Fact]
    public void AnAlreadyQuantizedModelIsSaidToBeSo()
    {
        using var original = Load();
        using var m = Model.Load(original.File!.Path);
        var calib = Data(m, "calib.txt", 2).Samples;
        using var w4a8 = TestCompiler.CompileAndReload(_dir, m, "w4a8", calib, out var first);
        Assert.DoesNotContain(first.Context.Notices, n => n.Contains("already quantized", StringComparison.Ordinal));
        using var again = Model.Load(w4a8.File!.Path);
        using var second = TestCompiler.Compile(again, "w4a8", calib);
        var notice = Assert.Single(second.Context.Notices, n => n.StartsWith("quantize: the model is already quantized", StringComparison.Ordinal));
        Assert.Matches(@"\d+ ai\.quantc\.MatMulInt4Int8", notice);
        Assert.Contains("1 float linear layer(s) found for this recipe (lm_head)", notice);

        using var qdq = TestCompiler.CompileAndReload(_dir, Model.Load(original.File!.Path), "w8a8", calib, out _);
        var e = Assert.Throws<Quantc.Onnx.BadInputException>(() => TestCompiler.Compile(qdq, "quarot-w4a8", calib));
        Assert.Contains("fold_norm cannot:", e.Message);
        Assert.Matches(@"the model is already quantized \(\d+ DequantizeLinear weights \(QDQ\)", e.Message);
    }
}
