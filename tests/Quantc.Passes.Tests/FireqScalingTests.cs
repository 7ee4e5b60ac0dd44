using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Verification;
using Quantc.Onnx;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>
/// FireQ's scaling rules (fireq_scale: channel scaling and v/o × 0.9; fireq_rope: pre-RoPE pair scaling and post-RoPE online
/// scaling) leave the logits unchanged (≤ 1e-5 relative, the network without its massive-activation circuit) on eager attention
/// (torch flavor) and GroupQueryAttention fed by RotaryEmbedding (ortgenai flavor), both with GQA (4 query heads over 2 KV heads),
/// and on a decode step fed the compiled model's own cache; the rules take effect; the forms they cannot take are refused with a reason.
/// </summary>
public sealed class FireqScalingTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-fireq");

    public void Dispose() => _dir.Delete(recursive: true);

    public static TheoryData<string, string> Cases => new()
    {
        { "torch", "passes: [fireq_scale]" },
        { "ortgenai", "passes: [fireq_scale]" },
        { "torch", "passes: [fireq_rope]" },
        { "ortgenai", "passes: [fireq_rope]" },
        { "torch", "passes: [{fireq_rope: {post: false}}]" },
        { "torch", "passes: [fireq_scale, fireq_rope]" },
        // After fuse_attention: one ONNX Attention per layer, fed 3-D tensors by RotaryEmbedding.
        { "torch", "passes: [fuse_norm, fuse_rope, fuse_attention, fireq_scale, fireq_rope]" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void PreservesTheLogitsOnPrefillAndDecode(string flavor, string recipe)
    {
        using var original = LoadLlama(_dir, flavor, massive: false);
        using var m = LoadLlama(_dir, flavor, massive: false);
        var ctx = RunRecipe(m, recipe, Calibration(m, 4));
        foreach (var line in ctx.Log) log.WriteLine(line);
        if (recipe.Contains("fireq_scale", StringComparison.Ordinal))
        {
            Assert.Equal(8, ctx.Log.Count(l => l.StartsWith("fireq_scale: ", StringComparison.Ordinal) && l.Contains(" via ", StringComparison.Ordinal)));
            Assert.Contains(ctx.Log, l => l.StartsWith("fireq_scale: 4 value projections × 0.9", StringComparison.Ordinal));
        }
        if (recipe.Contains("fireq_rope", StringComparison.Ordinal))
        {
            var lines = ctx.Log.Where(l => l.StartsWith("fireq_rope: ", StringComparison.Ordinal) && l.Contains("2 KV heads of 32", StringComparison.Ordinal)).ToList();
            Assert.Equal(4, lines.Count);
            bool post = !recipe.Contains("post: false", StringComparison.Ordinal);
            Assert.All(lines, l => Assert.Contains(post ? "post-RoPE scaling on" : "no post-RoPE scaling", l));
            Assert.Equal(post ? 8 : 0, m.Graph.Nodes.Count(n => n.OpType == "Mul" && n.Name.Contains("/fireq_", StringComparison.Ordinal)));
        }
        using var compiled = Model.Load(Save(_dir, m));
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        double worst = 0;
        foreach (var t in EvalTokens(original, 3, 48))
        {
            var sample = CalibrationInputs.FromTokens(original.Graph, t);
            worst = Math.Max(worst, MaxRelErr(Outputs(a, sample)["logits"], Outputs(b, sample)["logits"]));
        }
        // A decode step through each model's own cache (the compiled cache holds the scaled keys and values).
        var tokens = EvalTokens(original, 1, 21)[0];
        var first = CalibrationInputs.FromTokens(original.Graph, tokens.AsSpan(0, 20));
        var pa = Outputs(a, first);
        var pb = Outputs(b, first);
        double decode = MaxRelErr(Outputs(a, DecodeStep(tokens[20], 20, pa))["logits"], Outputs(b, DecodeStep(tokens[20], 20, pb))["logits"]);
        log.WriteLine($"{flavor} {recipe}: logits max rel err prefill {worst:E2}, decode {decode:E2}");
        Assert.True(worst <= 1e-5, $"prefill logits max relative error {worst:E3}");
        Assert.True(decode <= 1e-5, $"decode logits max relative error {decode:E3}");
    }

    /// <summary>The key cache is held scaled (the test above can fail): the pre-RoPE scales bring the keys' pair magnitudes to 8.</summary>
    [Fact]
    public void TheKeyCacheHoldsTheScaledKeys()
    {
        using var m = LoadLlama(_dir, "torch", massive: false);
        var ctx = RunRecipe(m, "passes: [fireq_rope]", Calibration(m, 4));
        Assert.Contains("present.0.key", m.Metadata.Single(kv => kv.Key == FireqRopePass.KeyCacheScaleKey).Value);
        using var compiled = Model.Load(Save(_dir, m));
        using var b = OrtModel.CreateSession(compiled);
        var key = Outputs(b, CalibrationInputs.FromTokens(compiled.Graph, EvalTokens(compiled, 1, 48)[0]))["present.0.key"];
        float max = key.Max(MathF.Abs);
        log.WriteLine($"present.0.key absmax after fireq_rope: {max}");
        Assert.InRange(max, 4f, 12f);
    }

    /// <summary>
    /// quantc verify compares the caches in the original basis: the key cache's per-head, per-channel factors and the value cache's
    /// 0.9 come from the metadata, present outputs are scaled back and a past fed to the compiled model is scaled into its basis (a
    /// decode sample); the scaled q/k intermediates are left out of the per-layer table. Without the metadata the same comparison
    /// reports the scaled caches as errors (the test can fail).
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void VerifyComparesTheScaledCachesInTheOriginalBasis(string flavor)
    {
        using var original = LoadLlama(_dir, flavor, massive: false);
        using var m = LoadLlama(_dir, flavor, massive: false);
        RunRecipe(m, "passes: [fireq_scale, fireq_rope]", Calibration(m, 4));
        string path = Save(_dir, m);
        using var compiled = Model.Load(path);
        using var a = OrtModel.CreateSession(original);
        var tokens = EvalTokens(original, 1, 21)[0];
        var first = CalibrationInputs.FromTokens(original.Graph, tokens.AsSpan(0, 20));
        var samples = new List<CalibrationSample> { first, DecodeStep(tokens[20], 20, Outputs(a, first)) };
        var scaled = new[] { "present.0.key", "present.3.key", "present.0.value", "present.3.value" };

        var r = Verifier.Run(original, compiled, samples, null, new VerifyOptions { PerLayer = true });
        foreach (var o in r.Outputs)
        {
            log.WriteLine($"{flavor} {o.Name}: SQNR {o.SqnrDb:0.0} dB");
            Assert.True(o.SqnrDb > 100, $"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
        }
        // Intermediates held scaled (q/k between the projections and the attention) are left out, not reported as errors.
        Assert.NotEmpty(r.Layers);
        foreach (var l in r.Layers) Assert.True(l.SqnrDb > 100, $"{l.CompiledName} ({l.Op}): SQNR {l.SqnrDb:0.0} dB");

        using var bare = Model.Load(path);
        bare.SetMetadata(CacheTransforms.KeyScaleKey, "");
        bare.SetMetadata(CacheTransforms.ValueScaleKey, "");
        var unscaled = Verifier.Run(original, bare, [first], null, new VerifyOptions { PerLayer = false });
        foreach (var name in scaled)
        {
            double db = unscaled.Outputs.Single(o => o.Name == name).SqnrDb;
            log.WriteLine($"{flavor} {name} without the metadata: SQNR {db:0.0} dB");
            Assert.True(db < 40, $"{name}: {db:0.0} dB although the cache is scaled");
        }
    }

    /// <summary>The metadata's per-head key scale round-trips on both cache layouts; malformed entries are bad input.</summary>
    [Fact]
    public void CacheScalesRoundTripAndMalformedMetadataIsBadInput()
    {
        float[] f = [2, 4, 0.5f, 8, 1, 3, 5, 0.25f];   // 2 heads × 4 channels
        var t = CacheTransforms.Of([KeyValuePair.Create(CacheTransforms.KeyScaleKey,
            CacheTransforms.KeyScaleGroup(2, 4, f, ["k"])), KeyValuePair.Create(CacheTransforms.ValueScaleKey, "0.9:v")]);
        var bhsd = Enumerable.Range(1, 24).Select(i => (float)i).ToArray();   // [1, 2, 3, 4]
        var x = (float[])bhsd.Clone();
        t.ToRotated("k", x, [1, 2, 3, 4]);
        Assert.Equal(bhsd[13] * f[5], x[13]);   // head 1 (rows 3..5), channel 1
        Assert.Equal(bhsd[2] * f[2], x[2]);
        t.ToOriginal("k", x, [1, 2, 3, 4]);
        Assert.Equal(bhsd, x);
        var bsx = (float[])bhsd.Clone();   // [1, 3, 8]
        t.ToRotated("k", bsx, [1, 3, 8]);
        Assert.Equal(bhsd[13] * f[5], bsx[13]);
        var v = new[] { 1f, 2f };
        t.ToRotated("v", v);
        Assert.Equal(0.9f, v[0], 6);
        Assert.Throws<BadInputException>(() => t.ToRotated("k", new float[24], [1, 3, 2, 4]));
        foreach (var bad in new[] { "2:4:1;2;3:k", "2:4:" + string.Join(";", Enumerable.Repeat("0", 8)) + ":k", "x:4:1:k" })
            Assert.Throws<BadInputException>(() => CacheTransforms.Of([KeyValuePair.Create(CacheTransforms.KeyScaleKey, bad)]));
        Assert.Throws<BadInputException>(() => CacheTransforms.Of([KeyValuePair.Create(CacheTransforms.ValueScaleKey, "NaN:v")]));
    }

    /// <summary>A key cache both rotated (rotate_qk) and scaled per channel (fireq_rope) cannot be undone: either order is refused.</summary>
    [Fact]
    public void RotatedAndScaledKeyCachesAreRefused()
    {
        using var m = LoadLlama(_dir, "torch", massive: false);
        var e = Assert.Throws<BadInputException>(() => RunRecipe(m, "passes: [rotate_qk, fireq_rope]", Calibration(m, 2)));
        Assert.Contains("already rotated", e.Message);
        using var m2 = LoadLlama(_dir, "torch", massive: false);
        e = Assert.Throws<BadInputException>(() => RunRecipe(m2, "passes: [fireq_rope, rotate_qk]", Calibration(m2, 2)));
        Assert.Contains("already scaled per channel", e.Message);
    }

    /// <summary>An interleaved RotaryEmbedding pairs (2i, 2i + 1), not (i, i + d/2): every attention refused with the reason, nothing
    /// changed, a notice instead of a silent no-op.</summary>
    [Fact]
    public void InterleavedRopeIsRefusedWithTheReason()
    {
        using var m = LoadLlama(_dir, "ortgenai", massive: false);
        foreach (var n in m.Graph.Nodes.Where(n => n.OpType == "RotaryEmbedding")) n.SetAttribute("interleaved", 1L);
        var ctx = RunRecipe(m, "passes: [fireq_rope]", Calibration(m, 2));
        Assert.Equal(4, ctx.Log.Count(l => l.StartsWith("fireq_rope: ", StringComparison.Ordinal) && l.Contains("is interleaved", StringComparison.Ordinal)));
        Assert.Contains(ctx.Notices, l => l.StartsWith("fireq_rope: none of 4 attentions could be scaled", StringComparison.Ordinal));
        Assert.DoesNotContain(m.Graph.Nodes, n => n.Name.Contains("/fireq_", StringComparison.Ordinal));
    }

    /// <summary>
    /// FireQ's INT4 cache (quantize_kv symmetric with float8 scales): every head of every cached token is an int4 grid, q·s with q in
    /// [−8, 7] and s a float8 e4m3fn value — also with the post-RoPE scaling in place before it; the queries are float8 values
    /// per head, times their scale.
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void TheInt4CacheHoldsFloat8ScaledGridsPerTokenAndHead(string flavor)
    {
        using var m = LoadLlama(_dir, flavor, massive: false);
        var ctx = RunRecipe(m, "passes: [fireq_rope, {quantize_kv: {bits: 4, symmetric: true, fp8_scales: true, fp8_queries: true}}]",
            Calibration(m, 2));
        Assert.Equal(4, ctx.Log.Count(l => l.Contains("keys and values and queries float8 int4 symmetric (float8 scales)", StringComparison.Ordinal)));
        using var compiled = Model.Load(Save(_dir, m));
        using var b = OrtModel.CreateSession(compiled);
        var outs = Outputs(b, CalibrationInputs.FromTokens(compiled.Graph, EvalTokens(compiled, 1, 40)[0]));
        foreach (var name in new[] { "present.0.key", "present.3.value" })
        {
            var x = outs[name];
            for (int o = 0; o < x.Length; o += 32)
            {
                var head = x.AsSpan(o, 32);
                float max = 0;
                foreach (float v in head) max = Math.Max(max, Math.Abs(v));
                float s = Math.Max(Quantc.Core.Numerics.Int4Fp8.RoundFp8(max / 7), MathF.ScaleB(1f, -9));
                // The largest |q·s| is 7·s or 8·s; s is the float8 value recovered from it.
                foreach (float v in head)
                {
                    float q = v / s;
                    Assert.True(Math.Abs(q - MathF.Round(q)) < 1e-4 && q is >= -8 and <= 7, $"{name}[{o}..]: {v} is not an int4 step of {s}");
                }
            }
        }
    }
}
