using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>
/// PrefixQuant's prefix_tokens: the outlier tokens found from calibration, and the injection's function: the compiled
/// model on x equals the original on [prefix, x] at x's positions (logits and present cache), on prefill, on a step fed
/// the compiled model's own cache, and with left padding; eager attention, GroupQueryAttention and ONNX Attention (the
/// prefix put in before or after fuse_attention).
/// </summary>
public sealed class PrefixTokensTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-prefix");

    public void Dispose() => _dir.Delete(recursive: true);

    private static readonly long[] Prefix = [256, 10, 46];

    /// <summary>Inputs of a batch of rows of equal length: ids, mask, positions (mask cumsum − 1, 0 on padding), past [b, 2,
    /// past, 32].</summary>
    private static CalibrationSample Inputs(long[][] ids, long[][] mask, Dictionary<string, float[]>? past, int pastLen,
        long[]? positions = null)
    {
        int b = ids.Length, n = ids[0].Length, total = mask[0].Length;
        var s = new CalibrationSample();
        s.Inputs["input_ids"] = (ids.SelectMany(r => r).ToArray(), [b, n]);
        s.Inputs["attention_mask"] = (mask.SelectMany(r => r).ToArray(), [b, total]);
        var pos = new long[b * n];
        for (int r = 0; r < b; r++)
        {
            long c = -1;
            for (int j = 0; j < total; j++)
            {
                c += mask[r][j];
                if (j >= total - n) pos[r * n + j - (total - n)] = Math.Max(c, 0);
            }
        }
        s.Inputs["position_ids"] = (positions ?? pos, [b, n]);
        for (int i = 0; i < 4; i++)
            foreach (var kind in new[] { "key", "value" })
                s.Inputs[$"past_key_values.{i}.{kind}"] = (past?[$"present.{i}.{kind}"] ?? [], [b, 2, pastLen, 32]);
        return s;
    }

    private static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();

    /// <summary>Rows [from, from + count) of each [b, rows, …] sequence of the original's present cache / logits.</summary>
    private static float[] Rows(float[] x, int batch, int heads, int rows, int width, int from, int count)
    {
        var y = new float[batch * heads * count * width];
        for (int bh = 0; bh < batch * heads; bh++)
            Array.Copy(x, ((long)bh * rows + from) * width, y, (long)bh * count * width, (long)count * width);
        return y;
    }

    private Model Compile(string flavor, string recipe)
    {
        using var m = LoadLlama(_dir, flavor);
        var ctx = RunRecipe(m, recipe);
        foreach (var line in ctx.Log) log.WriteLine(line);
        return Model.Load(Save(_dir, m));
    }

    /// <summary>Worst relative error of the compiled run against the original run with the prefix ahead, prefix rows dropped.</summary>
    private static double Worst(Dictionary<string, float[]> reference, Dictionary<string, float[]> compiled, int batch, int o, int total,
        int n, Dictionary<string, double> worst, bool prefill = true)
    {
        double w = 0;
        foreach (var (name, c) in compiled)
        {
            bool logits = name == "logits";
            int drop = prefill ? o : 0;
            var r = logits ? Rows(reference[name], batch, 1, drop + n, 257, drop, n)
                : Rows(reference[name], batch, 2, o + total, 32, o, total);
            double e = MaxRelErr(r, c);
            string kind = logits ? "logits" : "cache";
            worst[kind] = Math.Max(worst.GetValueOrDefault(kind), e);
            w = Math.Max(w, e);
        }
        return w;
    }

    public static TheoryData<string, string> Forms => new()
    {
        { "torch", "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}]" },
        { "ortgenai", "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}]" },
        { "torch", "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}, fuse_norm, fuse_rope, fuse_attention]" },
        { "torch", "passes: [fuse_norm, fuse_rope, fuse_attention, {prefix_tokens: {tokens: [256, 10, 46]}}]" },
    };

    /// <summary>
    /// Prefill of 40 tokens, then a step of 5 tokens fed the compiled model's own present cache: logits and present keys /
    /// values equal the original's on [prefix, x] (prefix rows dropped) within 1e-5 relative; inputs and outputs keep
    /// their names.
    /// </summary>
    [Theory]
    [MemberData(nameof(Forms))]
    public void CompiledOnXEqualsOriginalOnPrefixThenX(string flavor, string recipe)
    {
        using var original = LoadLlama(_dir, flavor);
        using var compiled = Compile(flavor, recipe);
        Assert.Equal(original.Graph.Inputs.Where(v => !v.IsInitializer).Select(v => v.Name),
            compiled.Graph.Inputs.Where(v => !v.IsInitializer).Select(v => v.Name));
        Assert.Equal(original.Graph.Outputs.Select(v => v.Name), compiled.Graph.Outputs.Select(v => v.Name));
        if (recipe.Contains("fuse_attention", StringComparison.Ordinal))
            Assert.Equal(4, compiled.Graph.Nodes.Count(n => n.OpType == "Attention"));
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var t = EvalTokens(original, 1, 45)[0];
        int o = Prefix.Length;
        var worst = new Dictionary<string, double>(StringComparer.Ordinal);

        long[] x1 = t[..40], x2 = t[40..];
        var full1 = Prefix.Concat(x1).ToArray();
        var ref1 = Outputs(a, Inputs([full1], [Ones(o + 40)], null, 0));
        var own1 = Outputs(b, Inputs([x1], [Ones(40)], null, 0));
        Worst(ref1, own1, 1, o, 40, 40, worst);
        // The step: the original continues from its own cache (prefix included), the compiled one from what it wrote.
        var ref2 = Outputs(a, Inputs([x2], [Ones(o + 45)], ref1, o + 40));
        var own2 = Outputs(b, Inputs([x2], [Ones(45)], own1, 40));
        Worst(ref2, own2, 1, o, 45, 5, worst, prefill: false);
        Within(worst, $"{flavor} {recipe}");
    }

    /// <summary>
    /// verify of a prefix model against its float original: the original reads the prefix and then each sample (text without
    /// its own BOS, which the prefix carries), and every output and intermediate is compared from the first text position on —
    /// so the float prefix-only model verifies as the same function (its logits within float noise, greedy decoding equal),
    /// where comparing the two on the same samples measured the prefix itself as error.
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void VerifyComparesFromTheFirstTextPosition(string flavor)
    {
        using var original = LoadLlama(_dir, flavor);
        using var compiled = Compile(flavor, "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}]");
        var tokens = EvalTokens(original, 3, 48).Select(t => t[0] == 256 ? t[1..] : t).ToList();  // no BOS of their own
        var samples = tokens.Select(t => CalibrationInputs.FromTokens(compiled.Graph, t)).ToList();
        var r = Quantc.Core.Verification.Verifier.Run(original, compiled, samples, tokens,
            new Quantc.Core.Verification.VerifyOptions { GreedySteps = 12 });
        foreach (var o in r.Outputs)
        {
            log.WriteLine($"{flavor} {o.Name}: {o.SqnrDb:0.0} dB");
            Assert.True(o.SqnrDb > 90, $"{o.Name}: {o.SqnrDb:0.0} dB");
        }
        // Every intermediate the original has is compared (prefix_tokens marks them "#prefix", which the alignment undoes): as
        // many as the original against itself.
        var withBos = EvalTokens(original, 3, 48);
        var self = Quantc.Core.Verification.Verifier.Run(original, original,
            withBos.Select(t => CalibrationInputs.FromTokens(original.Graph, t)).ToList(), withBos,
            new Quantc.Core.Verification.VerifyOptions { GreedySteps = 0 });
        log.WriteLine($"{flavor}: {r.Layers.Count} intermediates compared, {self.Layers.Count} against itself");
        Assert.Equal(self.Layers.Count, r.Layers.Count);
        Assert.True(r.Layers.Count > 4, $"{r.Layers.Count} intermediates compared");
        Assert.All(r.Layers, l => Assert.True(l.SqnrDb > 80, $"{l.CompiledName}: {l.SqnrDb:0.0} dB"));
        Assert.Equal(1.0, r.Logits!.Top1Agreement);
        Assert.Equal(r.Logits.OriginalPerplexity, r.Logits.CompiledPerplexity, 4);
        Assert.Equal(12, r.Greedy!.Matching);
        if (flavor == "torch")
        {
            // verify --exact: the float64 original reads the prefix first as well (standard ONNX ops: the torch export only).
            using var x64 = Model.Load(Save(_dir, original));
            Quantc.Core.Verification.Float64Model.Convert(x64);
            var e = Quantc.Core.Verification.Verifier.Run(original, compiled, samples, tokens,
                new Quantc.Core.Verification.VerifyOptions { ExactReference = x64, PerLayer = false, GreedySteps = 0 });
            var logits = e.Outputs.Single(o => o.Name == "logits");
            log.WriteLine($"against float64: compiled {logits.SqnrVsExactDb:0.0} dB, original {logits.OriginalNoiseSqnrDb:0.0} dB");
            Assert.True(logits.SqnrVsExactDb > 100, $"compiled against the float64 original: {logits.SqnrVsExactDb:0.0} dB");
            Assert.Equal(logits.OriginalNoiseSqnrDb!.Value, logits.SqnrVsExactDb!.Value, 6);
        }
        // A quantized prefix model is measured the same way: its rounding, not the prefix, is the error.
        using var w8 = Compile(flavor, "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}, {quantize: {weights: int8, activations: int8, " +
            "mode: dynamic}}, {weights: {method: rtn}}, lower_qdq]");
        var q = Quantc.Core.Verification.Verifier.Run(original, w8, samples, tokens, new Quantc.Core.Verification.VerifyOptions());
        double sqnr = q.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{flavor} w8a8-dynamic with the prefix: logits {sqnr:0.0} dB");
        Assert.InRange(sqnr, 10, 60);
        // Without token data the original's samples cannot be made; a prefix model as the reference of one without is refused.
        Assert.Contains("needs token data", Assert.Throws<BadInputException>(() =>
            Quantc.Core.Verification.Verifier.Run(original, compiled, samples, null)).Message);
        long positions = Quantc.Core.Data.TokenLimits.Of(original.Graph).Positions!.Value;
        var full = new[] { new long[positions - 1] };  // fits the compiled model, not the original with the prefix ahead
        Assert.Contains($"give at most {positions - 3} tokens per sample", Assert.Throws<BadInputException>(() =>
            Quantc.Core.Verification.Verifier.Run(original, compiled, [CalibrationInputs.FromTokens(compiled.Graph, full[0])], full))
            .Message);
        Assert.Contains("the original model keeps prefix tokens [256, 10, 46] in its KV cache and the compiled one none",
            Assert.Throws<BadInputException>(() => Quantc.Core.Verification.Verifier.Run(compiled, original, samples, tokens)).Message);
    }

    private void Within(Dictionary<string, double> worst, string what)
    {
        foreach (var (kind, e) in worst)
        {
            log.WriteLine($"{what}: {kind} max rel err {e:E2}");
            Assert.True(e <= 1e-5, $"{kind}: max relative error {e:E3} > 1e-5");
        }
    }

    /// <summary>A batch of two with the second row left-padded by 6: the compiled model equals the original on [prefix, row]
    /// with the prefix visible to every row (eager attention).</summary>
    [Fact]
    public void LeftPaddingKeepsTheFunction()
    {
        using var original = LoadLlama(_dir, "torch");
        using var compiled = Compile("torch", "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}]");
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var t = EvalTokens(original, 2, 30);
        int o = Prefix.Length;
        var padded = Enumerable.Repeat(0L, 6).Concat(t[1][..24]).ToArray();
        long[][] ids = [t[0], padded];
        long[][] mask = [Ones(30), Enumerable.Repeat(0L, 6).Concat(Ones(24)).ToArray()];
        var refIds = ids.Select(r => Prefix.Concat(r).ToArray()).ToArray();
        var refMask = mask.Select(r => Ones(o).Concat(r).ToArray()).ToArray();
        var worst = new Dictionary<string, double>(StringComparer.Ordinal);
        // The reference's positions count the prefix: mask cumsum − 1 over [prefix, row].
        var own = Inputs(ids, mask, null, 0);
        var pos = (long[])own.Inputs["position_ids"].Data;
        var refPos = new[] { 0, 1 }.SelectMany(r => Enumerable.Range(0, o).Select(i => (long)i)
                .Concat(pos.Skip(r * 30).Take(30).Select(p => p + o)))
            .ToArray();
        var reference = Outputs(a, Inputs(refIds, refMask, null, 0, refPos));
        var ownOut = Outputs(b, own);
        Worst(reference, ownOut, 2, o, 30, 30, worst);
        Within(worst, "left padding");
    }

    /// <summary>
    /// Detection on the tiny llama: BOS (256) is the outlier at position 0 in the inputs of down_proj of layers 1 and 3
    /// (its trigger flag, models/README.md), hundreds of times the median, and so is the delimiter '\n' (10) wherever it
    /// occurs (0.5 per sample of 64 tokens of calib.txt read as one stream): o = 1, prefix [256, 10]. The spikes are
    /// triggered by the token id, so they stay after the prefix. Each layer's figures are in the log, before and after.
    /// </summary>
    [Fact]
    public void DetectsTheSpikeTokensOfTheReferenceLlama()
    {
        using var m = LoadLlama(_dir, "torch");
        var calib = Calibration(m, 4);
        var ctx = RunRecipe(m, "passes: [prefix_tokens]", calib);
        foreach (var line in ctx.Log) log.WriteLine(line);
        foreach (int layer in new[] { 1, 3 })
        {
            var line = Assert.Single(ctx.Log, l => l.StartsWith($"prefix_tokens: before model.layers.{layer}.mlp.down_proj input:",
                StringComparison.Ordinal));
            Assert.Contains("at positions 0×4,", line, StringComparison.Ordinal);
            Assert.Contains("outlier tokens after position 0: 10×", line, StringComparison.Ordinal);
        }
        Assert.Contains(ctx.Log, l => l.StartsWith("prefix_tokens: o = 1: prefix [256, 10] = BOS 256 (position 0 is an outlier) + 10 (",
            StringComparison.Ordinal));
        Assert.Contains(ctx.Log, l => l.StartsWith("prefix_tokens: largest token max / median before the prefix",
            StringComparison.Ordinal));
        Assert.Contains(ctx.Log, l => l.EndsWith("outliers per sample after position 0: 0.5 → 0.5", StringComparison.Ordinal));
        Assert.Equal("256,10", m.Metadata.Single(kv => kv.Key == "quantc.prefix_tokens").Value);
    }

    /// <summary>With η above every ratio there is no outlier: a notice gives the largest ratio measured; BOS is prefixed
    /// alone; detect_only leaves the graph as it was.</summary>
    [Fact]
    public void NoOutlierIsSaidWithTheMeasuredRatio()
    {
        using var m = LoadLlama(_dir, "torch");
        var calib = Calibration(m, 2);
        int nodes = m.Graph.Nodes.Count;
        var ctx = RunRecipe(m, "passes: [{prefix_tokens: {eta: 100000, detect_only: true}}]", calib);
        var notice = Assert.Single(ctx.Notices);
        Assert.Matches(@"^prefix_tokens: no outlier token \(> 100000× the median token max\) in 2 samples; largest ratio \d+(\.\d)?× " +
            @"\(model\.layers\.[13]\.mlp\.down_proj, token (256|10) at position \d+\); detect_only$", notice);
        Assert.Equal(nodes, m.Graph.Nodes.Count);
    }

    /// <summary>
    /// After the prefix the model map still names each layer's past input and present output, and the same sources as
    /// before it (the new keys / values, not the constant prefix, not the whole cache after repeat-kv): quantize_kv
    /// fake-quantizes what this step computes and leaves the prefix exact.
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void TheMapSeesThroughThePrefix(string flavor)
    {
        using var m = LoadLlama(_dir, flavor);
        static List<string> Sources(Quantc.Ir.Analysis.CacheStream? s) =>
            [.. s!.Sources.Select(u => $"{u.Node.Name}#{u.InputIndex}")];
        var before = Quantc.Ir.Analysis.LayerAnalysis.Analyze(m.Graph).Attention
            .Select(a => (Keys: Sources(a.Keys), Values: Sources(a.Values))).ToList();
        RunRecipe(m, "passes: [{prefix_tokens: {tokens: [256, 10]}}]");
        var sites = Quantc.Ir.Analysis.LayerAnalysis.Analyze(m.Graph).Attention;
        Assert.Equal(4, sites.Count);
        for (int i = 0; i < 4; i++)
            foreach (var (kind, stream, why) in new[] { ("key", sites[i].Keys, sites[i].KeysWhy),
                ("value", sites[i].Values, sites[i].ValuesWhy) })
            {
                Assert.True(stream is not null, why);
                Assert.Equal([$"past_key_values.{i}.{kind}"], stream!.CacheInputs);
                Assert.Equal([$"present.{i}.{kind}"], stream.CacheOutputs);
                Assert.Equal(kind == "key" ? before[i].Keys : before[i].Values, Sources(stream));
            }
    }

    /// <summary>
    /// prefixquant-w8a8 on the tiny llama (calibration without BOS, as its recipe asks): rotations, the prefix (BOS, from
    /// the tokenizer), static per-tensor int8 activations on every quantized layer, the graph fused; it runs in ONNX
    /// Runtime with the original's inputs and outputs.
    /// </summary>
    [Fact]
    public void PrefixQuantW8A8CompilesWithStaticPerTensorActivations()
    {
        using var m = LoadLlama(_dir, "torch");
        var calib = Quantc.Core.Data.DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
            new Quantc.Core.Data.DataOptions { SequenceLength = 64, MaxSamples = 4, Bos = false }).Samples;
        Assert.DoesNotContain(calib, c => ((long[])c.Inputs["input_ids"].Data)[0] == 256);
        var result = TestCompiler.Compile(m, "prefixquant-w8a8", calib);
        foreach (var line in result.Context.Log.Where(l => l.StartsWith("prefix_tokens: ", StringComparison.Ordinal))) log.WriteLine(line);
        Assert.Contains(result.Context.Log, l => l.StartsWith("prefix_tokens: 1 prefix tokens [256]", StringComparison.Ordinal));
        var quantized = result.Context.Plan.Layers.Where(p => p.ActivationFormat == Quantc.Core.Pipeline.NumberFormat.Int8).ToList();
        Assert.Equal(28, quantized.Count);
        Assert.All(quantized, p => Assert.Equal(Quantc.Core.Pipeline.ActivationMode.Static, p.ActivationMode));
        Assert.Equal(4, m.Graph.Nodes.Count(n => n.OpType == "Attention"));
        using var compiled = Model.Load(Save(_dir, m));
        using var s = OrtModel.CreateSession(compiled);
        var logits = Outputs(s, CalibrationInputs.FromTokens(compiled.Graph, EvalTokens(compiled, 1, 24)[0]))["logits"];
        Assert.Equal(24 * 257, logits.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>Each present output's slice follows its cache's producer: a model run in segments keeps a value until its last
    /// reader, and slices at the graph's end kept every layer's full cache to the last segment.</summary>
    [Theory]
    [InlineData("torch", "passes: [{prefix_tokens: {tokens: [256, 10, 46]}}]")]
    [InlineData("torch", "passes: [fuse_norm, fuse_rope, fuse_attention, {prefix_tokens: {tokens: [256, 10, 46]}}]")]
    public void EachPresentSliceFollowsItsCache(string flavor, string recipe)
    {
        using var m = LoadLlama(_dir, flavor);
        RunRecipe(m, recipe);
        var nodes = m.Graph.Nodes.ToList();
        var slices = nodes.Where(n => n.OpType == "Slice" && n.Output.IsGraphOutput && n.Output.Name.StartsWith("present", StringComparison.Ordinal))
            .ToList();
        Assert.Equal(8, slices.Count);
        foreach (var slice in slices)
        {
            // Nothing but other present slices (of a fused Attention's key and value) between the cache's producer and its slice.
            int from = nodes.IndexOf(slice.Inputs[0]!.Producer!), to = nodes.IndexOf(slice);
            Assert.True(from < to);
            Assert.All(nodes.Skip(from + 1).Take(to - from - 1), n => Assert.Contains(n, slices));
        }
    }

    /// <summary>A model past the segment budget runs the prefix in segments, as calibration does (a whole-model session of the 1b
    /// reference model took 4 GB): the compiled model is the same, byte for byte.</summary>
    [Fact]
    public void TheSegmentedPrefixRunCompilesToTheSameBytes()
    {
        string CompileWith(long segmentBytes)
        {
            using var m = LoadLlama(_dir, "torch");
            var calib = Quantc.Core.Data.DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"),
                new Quantc.Core.Data.DataOptions { SequenceLength = 32, MaxSamples = 2, Bos = false });
            var output = Path.Combine(_dir.CreateSubdirectory($"seg-{segmentBytes}").FullName, "q.onnx");
            using var result = TestCompiler.Compiler.Compile(m, TestCompiler.RecipeOf("prefixquant-w8a8"), new Quantc.Core.Compilation.CompileOptions
            {
                Calibration = calib, OutputPath = output, CalibrationRun = new CalibrationOptions { SegmentBytes = segmentBytes },
            });
            Assert.Contains(result.Report.Log, l => l.StartsWith("prefix_tokens: 1 prefix tokens [256]", StringComparison.Ordinal));
            return output;
        }
        using (var original = LoadLlama(_dir, "torch")) Assert.True(SegmentedRun.Plan(original, 64 << 10) is { Count: > 1 });
        var whole = CompileWith(long.MaxValue);
        var cut = CompileWith(64 << 10);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(cut));
    }

    /// <summary>Static int4 activations are the int4 grid on int8 storage: clipped to [−8s, 7s] before QuantizeLinear(s).</summary>
    [Fact]
    public void Int4ActivationsAreClippedToTheInt4Grid()
    {
        using var m = LoadLlama(_dir, "torch");
        var calib = Calibration(m, 2);
        TestCompiler.Compile(m,
            "passes: [{quantize: {weights: int8, activations: int4, mode: static}}, ranges, weights, lower_qdq]", calib);
        var clips = m.Graph.Nodes.Where(n => n.OpType == "Clip" && n.Name.EndsWith("/act_clip", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(clips);
        foreach (var clip in clips)
        {
            var q = Assert.Single(clip.Output.Uses, u => u.Node.OpType == "QuantizeLinear").Node;
            float scale = q.Inputs[1]!.Initializer!.ToFloat32()[0];
            Assert.Equal(-8 * scale, clip.Inputs[1]!.Initializer!.ToFloat32()[0], 6);
            Assert.Equal(7 * scale, clip.Inputs[2]!.Initializer!.ToFloat32()[0], 6);
        }
    }

    [Fact]
    public void BadTokenListIsABadInput()
    {
        using var m = LoadLlama(_dir, "torch");
        var e = Assert.Throws<BadInputException>(() => RunRecipe(m, "passes: [{prefix_tokens: {tokens: [1.5]}}]"));
        Assert.Contains("'tokens': 1.5 is not a token id", e.Message, StringComparison.Ordinal);
    }
}
