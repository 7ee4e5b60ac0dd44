using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>
/// QuaRot's R3 (rotate_qk: online Hadamard on queries and keys after RoPE, key cache held rotated) and the
/// KV-cache quantization it serves (quantize_kv): function preservation on prefill and on a decode step with a
/// past (the tiny llama has GQA: 4 heads, 2 KV heads, head_dim 32), the GroupQueryAttention refusal, the
/// portable form in stock ONNX Runtime, and what KV4 costs with and without R3.
/// </summary>
public sealed class RotateQkTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-r3");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Load(string flavor, string size = "tiny", bool massive = true) => LoadLlama(_dir, flavor, size, massive);

    private string Save(Model m) => OrtRuns.Save(_dir, m);

    private static PassContext Run(Model m, string recipeYaml, IReadOnlyList<CalibrationSample>? calibration = null) => RunRecipe(m, recipeYaml, calibration);

    private static CalibrationSample Step(long next, int prefix, IEnumerable<KeyValuePair<string, float[]>> present) => DecodeStep(next, prefix, present);

    public static TheoryData<string, string, bool, double> Flavors => new()
    {
        { "torch", "passes: [rotate_qk]", false, 1e-5 },
        { "torch", "passes: [{rotate_qk: {portable: true}}]", false, 1e-5 },
        { "torch", "passes: [rotate_head, rotate_qk]", false, 1e-5 },
        { "ortgenai", "passes: [rotate_qk]", false, 1e-5 },
        { "ortgenai", "passes: [{rotate_qk: {portable: true}}]", false, 1e-5 },
        { "ortgenai", "passes: [rotate_head, rotate_qk]", false, 1e-5 },
        // With the massive-activation circuit the network amplifies float32 rounding (see RotationTests.Chains):
        // the attention scores differ from the original's by the same ~2e-7 (rms relative) with the custom op
        // and with the MatMul, but the logits measured 1.1–2.0e-5 with ai.quantc.Hadamard, 5e-7 with the MatMul.
        { "torch", "passes: [rotate_qk]", true, 4e-5 },
        { "torch", "passes: [{rotate_qk: {portable: true}}]", true, 4e-5 },
        { "ortgenai", "passes: [rotate_head, rotate_qk]", true, 4e-5 },
    };

    /// <summary>
    /// R3 leaves the logits unchanged, and the key cache equals the original's once the Hadamard is undone
    /// (max relative error ≤ 1e-5 on the network without its massive-activation circuit): on prefill (4
    /// held-out sequences of 48 tokens) and on a decode step fed (a) the compiled model's own rotated present
    /// and (b) the original model's present moved into the rotated basis by the metadata
    /// (<see cref="CacheTransforms.ToRotated"/>).
    /// </summary>
    [Theory]
    [MemberData(nameof(Flavors))]
    public void RotateQkPreservesTheFunctionOnPrefillAndDecode(string flavor, string recipe, bool massive, double limit)
    {
        using var original = Load(flavor, massive: massive);
        using var m = Load(flavor, massive: massive);
        var ctx = Run(m, recipe);
        foreach (var line in ctx.Log) log.WriteLine(line);
        Assert.Equal(4, ctx.Log.Count(l => l.StartsWith("rotate_qk: ", StringComparison.Ordinal) && l.Contains("rotated by Hadamard 32", StringComparison.Ordinal)));
        int hadamards = m.Graph.Nodes.Count(n => n.OpType == "Hadamard" || n.Name.Contains("hadamard", StringComparison.Ordinal) && n.OpType == "MatMul");
        Assert.True(hadamards >= 8, $"{hadamards} Hadamard transforms (want one on the query and one on the keys of each of 4 layers)");
        using var compiled = Model.Load(Save(m));
        var rot = CacheTransforms.Of(compiled.Metadata);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(rot.Contains($"present.{i}.key") && rot.Contains($"past_key_values.{i}.key"), $"layer {i}'s key cache is not recorded as rotated");
            Assert.Equal(recipe.Contains("rotate_head", StringComparison.Ordinal), rot.Contains($"present.{i}.value"));
        }

        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var prefill = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var t in EvalTokens(original, 4, 48))
        {
            var sample = CalibrationInputs.FromTokens(original.Graph, t);
            Compare(Outputs(a, sample), Outputs(b, sample), rot, prefill);
        }
        var tokens = EvalTokens(original, 1, 21)[0];
        var first = CalibrationInputs.FromTokens(original.Graph, tokens.AsSpan(0, 20));
        var pa = Outputs(a, first);
        var pb = Outputs(b, first);
        var own = Compare(Outputs(a, Step(tokens[20], 20, pa)), Outputs(b, Step(tokens[20], 20, pb)), rot);
        var moved = pa.ToDictionary(kv => kv.Key, kv =>
        {
            var x = (float[])kv.Value.Clone();
            string past = kv.Key.StartsWith("present.", StringComparison.Ordinal) ? "past_key_values." + kv.Key["present.".Length..] : "";
            if (rot.Contains(past)) rot.ToRotated(past, x);
            return x;
        });
        var fed = Compare(Outputs(a, Step(tokens[20], 20, pa)), Outputs(b, Step(tokens[20], 20, moved)), rot);
        foreach (var (what, w) in new[] { ("prefill", prefill), ("decode, own cache", own), ("decode, original cache rotated", fed) })
            foreach (var (kind, e) in w)
            {
                log.WriteLine($"{flavor} {recipe} (massive activations: {massive}) {what}: {kind} max rel err {e:E2}");
                Assert.True(e <= limit, $"{what}: {kind} max relative error {e:E3} > {limit:E0}");
            }
    }

    /// <summary>Without undoing the rotation the key cache differs from the original's: the test above can fail.</summary>
    [Fact]
    public void TheKeyCacheIsHeldRotated()
    {
        using var original = Load("torch");
        using var m = Load("torch");
        Run(m, "passes: [rotate_qk]");
        using var compiled = Model.Load(Save(m));
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 16)[0]);
        double e = MaxRelErr(Outputs(a, sample)["present.0.key"], Outputs(b, sample)["present.0.key"]);
        Assert.True(e > 0.1, $"present.0.key is not rotated (max rel err {e:E2} against the original)");
    }

    /// <summary>The portable form has no ai.quantc op and runs in stock ONNX Runtime (no custom-op library registered).</summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void PortableRotateQkRunsInStockOrt(string flavor)
    {
        using var original = Load(flavor);
        using var m = Load(flavor);
        Run(m, "passes: [{rotate_qk: {portable: true}}]");
        Assert.DoesNotContain(m.Graph.AllNodes(), n => n.Domain == "ai.quantc");
        string path = Save(m);
        using var stock = new InferenceSession(path);
        using var a = OrtModel.CreateSession(original);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 32)[0]);
        double e = MaxRelErr(Outputs(a, sample)["logits"], Outputs(stock, sample)["logits"]);
        log.WriteLine($"{flavor} portable R3 in stock ORT: logits max rel err {e:E2}");
        Assert.True(e <= 1e-5, $"logits max relative error {e:E3}");
    }

    /// <summary>
    /// A GroupQueryAttention that applies RoPE inside (do_rotary = 1) has no query or key after RoPE in the
    /// graph: rotate_qk leaves it alone with the reason in the log and records no key-cache rotation;
    /// quantize_kv still quantizes its values but not its keys.
    /// </summary>
    [Fact]
    public void GroupQueryAttentionWithInternalRopeIsRefused()
    {
        using var m = Load("ortgenai");
        foreach (var n in m.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention")) n.SetAttribute("do_rotary", 1L);
        int before = m.Graph.Nodes.Count;
        var ctx = Run(m, "passes: [rotate_qk]");
        foreach (var line in ctx.Log) log.WriteLine(line);
        Assert.Equal(4, ctx.Log.Count(l => l.Contains("skipped: GroupQueryAttention applies RoPE inside (do_rotary = 1)", StringComparison.Ordinal)));
        Assert.Equal(before, m.Graph.Nodes.Count);
        Assert.DoesNotContain(m.Metadata, kv => kv.Key == RotateQkPass.CacheMetadataKey);

        var kv = Run(m, "passes: [quantize_kv]");
        Assert.Equal(4, kv.Log.Count(l => l.Contains("keys skipped: GroupQueryAttention applies RoPE inside", StringComparison.Ordinal)));
        Assert.Equal(4, kv.Log.Count(l => l.EndsWith("values int4 asymmetric per token and head (32)", StringComparison.Ordinal)));
    }

    private Model Custom(int heads, int kvHeads, int headDim)
    {
        var cfg = new LlamaConfig { HiddenSize = 128, IntermediateSize = 256, NumLayers = 2, NumHeads = heads, NumKvHeads = kvHeads, HeadDim = headDim, MaxPositions = 256 };
        using var built = LlamaBuilder.Build(cfg, new SyntheticLlamaWeights(cfg, 0), "torch");
        return Model.Load(Save(built));
    }

    /// <summary>A head size without a Hadamard matrix (26 = 2·13) is skipped, with the reason, and the graph left as it was.</summary>
    [Fact]
    public void HeadSizeWithoutAHadamardMatrixIsSkipped()
    {
        using var m = Custom(4, 2, 26);
        int before = m.Graph.Nodes.Count;
        var ctx = Run(m, "passes: [rotate_qk]");
        foreach (var line in ctx.Log) log.WriteLine(line);
        Assert.Equal(2, ctx.Log.Count(l => l.EndsWith("(eager) skipped: no Hadamard matrix of order 26 (the head size)", StringComparison.Ordinal)));
        Assert.Equal(before, m.Graph.Nodes.Count);
        Assert.DoesNotContain(m.Metadata, kv => kv.Key == RotateQkPass.CacheMetadataKey);
    }

    /// <summary>Without GQA (KV heads = heads: no repeat-kv between the cache Concat and the scores) R3 holds too, prefill and decode.</summary>
    [Fact]
    public void RotateQkPreservesMultiHeadAttentionWithoutGqa()
    {
        using var original = Custom(4, 4, 32);
        using var m = Custom(4, 4, 32);
        var ctx = Run(m, "passes: [rotate_qk]");
        Assert.Equal(2, ctx.Log.Count(l => l.Contains("rotated by Hadamard 32", StringComparison.Ordinal)));
        using var compiled = Model.Load(Save(m));
        var rot = CacheTransforms.Of(compiled.Metadata);
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var tokens = EvalTokens(original, 1, 33)[0];
        var first = CalibrationInputs.FromTokens(original.Graph, tokens.AsSpan(0, 32));
        var pa = Outputs(a, first);
        var pb = Outputs(b, first);
        var w = Compare(pa, pb, rot);
        static CalibrationSample Step4(long next, Dictionary<string, float[]> present)
        {
            var s = Step(next, 32, []);
            foreach (var (name, data) in present.Where(kv => kv.Key.StartsWith("present.", StringComparison.Ordinal)))
                s.Inputs["past_key_values." + name["present.".Length..]] = (data, [1, 4, 32, 32]);
            return s;
        }
        Compare(Outputs(a, Step4(tokens[32], pa)), Outputs(b, Step4(tokens[32], pb)), rot, w);
        foreach (var (kind, e) in w)
        {
            log.WriteLine($"MHA (4 KV heads) R3: {kind} max rel err {e:E2}");
            Assert.True(e <= 1e-5, $"{kind}: max relative error {e:E3}");
        }
    }

    /// <summary>quantc verify undoes the key-cache rotation before comparing present.*.key (and R2's value rotation).</summary>
    [Fact]
    public void VerifyComparesTheRotatedKeyCacheInTheOriginalBasis()
    {
        using var original = Load("torch");
        using var m = Load("torch");
        Run(m, "passes: [rotate_head, rotate_qk]");
        using var compiled = Model.Load(Save(m));
        var toks = EvalTokens(original, 2, 48);
        var samples = toks.Select(t => CalibrationInputs.FromTokens(original.Graph, t)).ToList();
        var r = Verifier.Run(original, compiled, samples, toks, new VerifyOptions { PerLayer = true });
        foreach (var o in r.Outputs)
        {
            log.WriteLine($"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
            Assert.True(o.SqnrDb > 100, $"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
        }
        // Intermediates in the rotated basis are left out, not reported as errors.
        Assert.All(r.Layers, l => Assert.True(l.SqnrDb > 80, $"{l.CompiledName} ({l.Op}): SQNR {l.SqnrDb:0.0} dB"));
    }

    /// <summary>A compiled model with rotated caches verified against itself (as `quantc verify a.onnx a.onnx`): both sides are
    /// mapped back to the original basis, so every output — the caches included — is identical.</summary>
    [Fact]
    public void VerifyOfARotatedModelAgainstItselfIsExact()
    {
        using var original = Load("torch");
        using var m = Load("torch");
        Run(m, "passes: [rotate_head, rotate_qk]");
        string path = Save(m);
        using var a = Model.Load(path);
        using var b = Model.Load(path);
        var toks = EvalTokens(original, 2, 48);
        var samples = toks.Select(t => CalibrationInputs.FromTokens(original.Graph, t)).ToList();
        var r = Verifier.Run(a, b, samples, toks, new VerifyOptions { PerLayer = false });
        Assert.Contains(r.Outputs, o => o.Name.EndsWith(".key", StringComparison.Ordinal));
        foreach (var o in r.Outputs) Assert.True(double.IsPositiveInfinity(o.SqnrDb), $"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
    }

    /// <summary>
    /// quantize_kv stores only grid values: each token's head of the new keys and values has at most 2^bits
    /// distinct values, and the error grows as bits shrink (int8 far better than int4).
    /// </summary>
    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    public void QuantizeKvPutsEveryHeadOnItsGrid(int bits)
    {
        using var original = Load("torch");
        using var m = Load("torch");
        var ctx = Run(m, $"passes: [rotate_qk, {{quantize_kv: {{bits: {bits}}}}}]");
        Assert.Equal(4, ctx.Log.Count(l => l.Contains($"keys and values int{bits}", StringComparison.Ordinal)));
        var (oa, ob) = OriginalAndCompiled(original, m);
        foreach (var name in new[] { "present.0.key", "present.3.value" })
        {
            var x = ob[name];
            int worst = 0;
            for (int o = 0; o < x.Length; o += 32) worst = Math.Max(worst, x.AsSpan(o, 32).ToArray().Distinct().Count());
            Assert.True(worst <= 1 << bits, $"{name}: {worst} distinct values in a head of one token (int{bits} allows {1 << bits})");
            Assert.True(worst > Math.Min(1 << (bits - 2), 16), $"{name}: only {worst} distinct values in a head");
        }
        double sqnr = Sqnr(oa["logits"], ob["logits"]);
        log.WriteLine($"R3 + KV{bits}: logits SQNR {sqnr:0.00} dB");
        Assert.True(bits == 8 ? sqnr > 30 : sqnr > 5, $"logits SQNR {sqnr:0.00} dB");
    }

    /// <summary>
    /// quantize_kv covers com.microsoft MultiHeadAttention (OPT's fused flavor): every layer's new keys and values go on
    /// the int4 grid, and the compiled model computes what the torch flavor's eager attention does with the same recipe.
    /// </summary>
    [Fact]
    public void QuantizeKvCoversMultiHeadAttention()
    {
        var logits = new Dictionary<string, float[]>();
        var sqnr = new Dictionary<string, double>();
        foreach (var flavor in new[] { "torch", "fused" })
        {
            var path = Path.Combine(_dir.FullName, $"opt-{flavor}-{Guid.NewGuid():N}.onnx");
            ReferenceModels.BuildAndSave("opt", "tiny", 0, flavor, path);
            using var original = Model.Load(path);
            using var m = Model.Load(path);
            var ctx = Run(m, "passes: [{quantize_kv: {bits: 4}}]");
            string form = flavor == "fused" ? "(MultiHeadAttention)" : "(eager)";
            Assert.Equal(4, ctx.Log.Count(l => l.Contains($"{form}: keys and values int4", StringComparison.Ordinal)));
            var (oa, ob) = OriginalAndCompiled(original, m);
            var key = ob["present.0.key"];
            int worst = 0;
            for (int o = 0; o < key.Length; o += 32) worst = Math.Max(worst, key.AsSpan(o, 32).ToArray().Distinct().Count());
            Assert.True(worst <= 16, $"{flavor}: {worst} distinct values in a head of one token (int4 allows 16)");
            logits[flavor] = ob["logits"];
            sqnr[flavor] = Sqnr(oa["logits"], ob["logits"]);
            log.WriteLine($"opt {flavor} KV4: logits SQNR {sqnr[flavor]:0.00} dB");
        }
        Assert.True(Math.Abs(sqnr["torch"] - sqnr["fused"]) < 0.5, $"torch {sqnr["torch"]:0.00} dB vs fused {sqnr["fused"]:0.00} dB");
        Assert.True(Sqnr(logits["torch"], logits["fused"]) > 40, "the two flavors' KV4 models should compute the same function");
    }

    /// <summary>Every output of the original and of the compiled <paramref name="m"/> (saved and reloaded) on 48 held-out tokens.</summary>
    private (Dictionary<string, float[]> Original, Dictionary<string, float[]> Compiled) OriginalAndCompiled(Model original, Model m)
    {
        using var compiled = Model.Load(Save(m));
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 48)[0]);
        return (Outputs(a, sample), Outputs(b, sample));
    }

    /// <summary>The tiny llama (torch) with key-cache outliers (<see cref="KeyOutliers"/>), optionally without the massive-activation circuit.</summary>
    private Model KeyOutlierModel(bool circuit)
    {
        using var m = Load("torch");
        if (!circuit) TriggerFlag.Remove(m, readers: true);
        KeyOutliers.Add(m);
        return Model.Load(Save(m));
    }

    /// <summary>Logits SQNR and top-1 of <paramref name="recipe"/> (a built-in name or YAML) on <paramref name="model"/>, verified on 4 × 64 held-out tokens.</summary>
    private (double Sqnr, double Top1) Measure(Func<Model> model, string recipe)
    {
        using var original = model();
        using var m = model();
        var data = DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "calib.txt"), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 8 });
        TestCompiler.Compile(m, recipe, data.Samples);
        using var compiled = Model.Load(Save(m));
        var eval = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = 4 });
        var rep = Verifier.Run(original, compiled, eval.Samples, eval.Tokens, new VerifyOptions { PerLayer = false });
        double sqnr = rep.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{recipe.ReplaceLineEndings(" ")}: logits SQNR {sqnr:0.00} dB, top-1 {rep.Logits!.Top1Agreement:P1}");
        return (sqnr, rep.Logits.Top1Agreement);
    }

    private const string K4 = "{quantize_kv: {bits: 4, clip_ratio: 0.95, values: false}}";

    /// <summary>
    /// With key-cache outliers (<see cref="KeyOutliers"/>) R3 makes a 4-bit key cache far better: keys alone
    /// quantized, float everything else, measured 16.01 → 20.25 dB logits SQNR (top-1 73.4 → 85.2 %) on the
    /// reference network; the assertion keeps half that margin.
    /// </summary>
    [Fact]
    public void RotateQkMakesTheKeyCacheQuantizable()
    {
        var (plain, _) = Measure(() => KeyOutlierModel(circuit: true), $"passes: [{K4}]");
        var (rotated, _) = Measure(() => KeyOutlierModel(circuit: true), $"passes: [rotate_qk, {K4}]");
        Assert.True(rotated > plain + 2, $"R3 + K4 {rotated:0.00} dB should beat K4 {plain:0.00} dB by > 2 dB");
    }

    /// <summary>
    /// W4A8KV4 on the network with key-cache outliers and without the massive-activation circuit (which
    /// defeats QuaRot's R1 on the reference model, see QuarotTests): quarot-w4a8-kv4 beats the naive
    /// w4a8-kv4 (measured 19.16 vs 13.05 dB), and R3 is a good part of it — the same recipe without
    /// rotate_qk measured 15.64 dB. The assertions keep about half of each margin.
    /// </summary>
    [Fact]
    public void QuarotKv4BeatsNaiveKv4AndNeedsR3()
    {
        var (naive, _) = Measure(() => KeyOutlierModel(circuit: false), "w4a8-kv4");
        var (quarot, _) = Measure(() => KeyOutlierModel(circuit: false), "quarot-w4a8-kv4");
        string withoutR3 = Builtins.Recipes["quarot-w4a8-kv4"].Replace("  - rotate_qk\n", "", StringComparison.Ordinal);
        Assert.DoesNotContain("rotate_qk", withoutR3, StringComparison.Ordinal);
        var (noR3, _) = Measure(() => KeyOutlierModel(circuit: false), withoutR3);
        Assert.True(quarot > naive + 3, $"quarot-w4a8-kv4 {quarot:0.00} dB should beat w4a8-kv4 {naive:0.00} dB by > 3 dB");
        Assert.True(quarot > noR3 + 1.5, $"quarot-w4a8-kv4 {quarot:0.00} dB should beat it without R3 ({noR3:0.00} dB) by > 1.5 dB");
    }

    private static double Sqnr(float[] reference, float[] test)
    {
        double s = 0, n = 0;
        for (int i = 0; i < reference.Length; i++) { s += (double)reference[i] * reference[i]; double e = reference[i] - test[i]; n += e * e; }
        return 10 * Math.Log10(s / Math.Max(n, 1e-300));
    }
}
