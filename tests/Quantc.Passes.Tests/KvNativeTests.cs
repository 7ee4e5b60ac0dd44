using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes.Tests;

/// <summary>
/// quantize_kv's <c>storage: native</c>: GroupQueryAttention's past/present become int8 (or uint8 with two 4-bit values per byte)
/// that ONNX Runtime writes and reads itself; the scales are static, calibrated by quantc, and recorded in the metadata so that
/// verify compares the stored cache as the float values it holds.
/// </summary>
public sealed class KvNativeTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-kvnative");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Recipe(int bits, bool perChannel) =>
        $"passes: [{{quantize_kv: {{storage: native, bits: {bits}, per_channel: {(perChannel ? "true" : "false")}}}}}]";

    /// <summary>Raw outputs of one run (the stored caches as int8 / uint8 arrays).</summary>
    private static Dictionary<string, (Array Data, long[] Shape)> Raw(InferenceSession s, CalibrationSample sample)
    {
        var inputs = CalibrationInputs.ToOrt(sample);
        try
        {
            using var ro = new RunOptions();
            var names = s.OutputNames.ToList();
            using var outs = s.Run(ro, inputs.Select(i => i.Name).ToList(), inputs.Select(i => i.Value).ToList(), names);
            return names.Select((n, i) => (n, CalibrationInputs.Copy(outs[i]))).ToDictionary(x => x.n, x => x.Item2, StringComparer.Ordinal);
        }
        finally { foreach (var (_, v) in inputs) v.Dispose(); }
    }

    [Theory]
    // Measured (4 calibration samples of 64 tokens, 4 held-out): int8 per channel 38.1 dB, per tensor 47.4 dB (few calibration
    // tokens fit per-channel ranges tightly), int4 27.1 / 25.0 dB.
    [InlineData(8, true, 33.0)]
    [InlineData(8, false, 35.0)]
    [InlineData(4, true, 20.0)]
    [InlineData(4, false, 18.0)]
    public void OnnxRuntimeStoresTheCalibratedGridInTheCache(int bits, bool perChannel, double floorDb)
    {
        using var original = LoadLlama(_dir, "ortgenai");
        using var m = LoadLlama(_dir, "ortgenai");
        var ctx = RunRecipe(m, Recipe(bits, perChannel), Calibration(m, 4));
        foreach (var line in ctx.Log.Where(l => l.StartsWith("quantize_kv", StringComparison.Ordinal))) log.WriteLine(line);
        Assert.Equal(4, ctx.Log.Count(l => l.Contains($"cache stored as {(bits == 8 ? "int8" : "uint8")}", StringComparison.Ordinal)));
        Assert.Contains(ctx.Log, l => l.StartsWith("quantize_kv: 4 attention cache(s) stored as", StringComparison.Ordinal));
        var g = m.Graph;
        foreach (var n in g.Nodes.Where(n => n.Is("GroupQueryAttention", "com.microsoft")))
        {
            Assert.Equal(perChannel ? "PER_CHANNEL" : "PER_TENSOR", n.GetString("k_quant_type"));
            Assert.Equal(perChannel ? "PER_CHANNEL" : "PER_TENSOR", n.GetString("v_quant_type"));
            Assert.Equal(bits, n.GetInt("kv_cache_bit_width", 0));
            Assert.Equal(14, n.Inputs.Count);
            Assert.Equal(perChannel ? [1L, 2, 1, 32] : [1L], n.Inputs[12]!.Initializer!.Dims);
        }
        foreach (var v in g.Inputs.Concat(g.Outputs).Where(v => v.Name.StartsWith("past_key_values.", StringComparison.Ordinal)
            || v.Name.StartsWith("present.", StringComparison.Ordinal)))
        {
            Assert.Equal(bits == 8 ? (int)DT.Int8 : (int)DT.Uint8, v.ElementType);
            Assert.Equal(bits == 8 ? 32 : 16, v.Shape![3]);
        }

        using var compiled = Model.Load(Save(_dir, m));
        var stored = KvStorage.Of(compiled.Metadata);
        Assert.True(stored.Contains("present.0.key") && stored.Contains("past_key_values.3.value"));
        Assert.Equal([1L, 2, 24, bits == 8 ? 32 : 16], StoredIsTheGrid(original, compiled, stored));
        // The model works: logits close to the float model's, and verify compares the stored caches as floats, decodes greedily.
        var (samples, evalTokens) = (DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SequenceLength = 64, MaxSamples = 4 }) is var d ? (d.Samples, d.Tokens) : default);
        var r = Verifier.Run(original, compiled, samples, evalTokens, new VerifyOptions { PerLayer = false });
        double logits = r.Outputs.Single(o => o.Name == "logits").SqnrDb, key = r.Outputs.Single(o => o.Name == "present.0.key").SqnrDb;
        log.WriteLine($"int{bits} {(perChannel ? "per channel" : "per tensor")}: logits {logits:0.00} dB, present.0.key {key:0.00} dB, " +
            $"greedy {r.Greedy?.Matching}/{r.Greedy?.Steps}");
        Assert.True(logits > floorDb, $"logits SQNR {logits:0.00} dB");
        Assert.True(key > floorDb - 10 && key < 80, $"present.0.key SQNR {key:0.00} dB");
        Assert.NotNull(r.Greedy);
    }

    /// <summary>The GenAI builder's other shape: GroupQueryAttention applying RoPE to its query and key inputs (do_rotary = 1) from
    /// its cos/sin caches. The cache holds the keys after RoPE, so quantc calibrates them that way: the stored keys then lose no
    /// more than without RoPE inside (a pre-RoPE range would clip the rotated pairs).</summary>
    [Fact]
    public void RopeInsideTheOpIsCalibratedOnTheRotatedKeys()
    {
        using var plain = LoadLlama(_dir, "ortgenai");
        using var original = Model.Load(Save(_dir, RopeInside(plain)));
        using var m = Model.Load(Save(_dir, RopeInside(LoadLlama(_dir, "ortgenai"))));
        var ctx = RunRecipe(m, Recipe(8, true), Calibration(m, 4));
        Assert.Equal(4, ctx.Log.Count(l => l.Contains("(keys calibrated as the op stores them, after its RoPE / R3 inside)",
            StringComparison.Ordinal)));
        using var compiled = Model.Load(Save(_dir, m));
        var d = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SequenceLength = 64, MaxSamples = 4 });
        var r = Verifier.Run(original, compiled, d.Samples, d.Tokens, new VerifyOptions { PerLayer = false });
        double logits = r.Outputs.Single(o => o.Name == "logits").SqnrDb, key = r.Outputs.Single(o => o.Name == "present.0.key").SqnrDb;
        log.WriteLine($"do_rotary int8 per channel: logits {logits:0.00} dB, present.0.key {key:0.00} dB");
        Assert.True(logits > 33 && key > 30, $"logits {logits:0.00} dB, present.0.key {key:0.00} dB");
    }

    /// <summary>The model with each GroupQueryAttention applying the RoPE of the RotaryEmbedding nodes in front of it itself.</summary>
    private static Model RopeInside(Model m)
    {
        var g = m.Graph;
        foreach (var n in g.Nodes.Where(n => n.Is("GroupQueryAttention", "com.microsoft")).ToList())
        {
            var q = n.Inputs[0]!.Producer!;
            var k = n.Inputs[1]!.Producer!;
            Assert.Equal("RotaryEmbedding", q.OpType);
            n.SetInput(0, q.Inputs[0]);
            n.SetInput(1, k.Inputs[0]);
            n.AddInput(k.Inputs[2]);
            n.AddInput(k.Inputs[3]);
            n.SetAttribute("do_rotary", 1L);
            n.SetAttribute("rotary_interleaved", k.GetInt("interleaved", 0));
        }
        g.RemoveDeadCode();
        return m;
    }

    /// <summary>Layer 0's new keys and values are the float model's (24 held-out tokens): the op's stored bytes must be quantc's
    /// grid of them (round half to even may differ from the op's rounding on an exact tie: at most a few values one step apart).
    /// Returns the stored shape of present.0.key.</summary>
    private static long[] StoredIsTheGrid(Model original, Model compiled, KvStorage stored)
    {
        var tokens = EvalTokens(compiled, 1, 24)[0];
        using var qs = OrtModel.CreateSession(compiled);
        using var fs = OrtModel.CreateSession(original);
        var q = Raw(qs, CalibrationInputs.FromTokens(compiled.Graph, tokens));
        var f = Outputs(fs, CalibrationInputs.FromTokens(original.Graph, tokens));
        foreach (var name in new[] { "present.0.key", "present.0.value" })
        {
            var (data, shape) = q[name];
            var ours = stored.Quantize(name, f[name], stored.LogicalShape(name, shape));
            float[] a = stored.Dequantize(name, data, shape), b = stored.Dequantize(name, ours.Data, ours.Shape);
            int differ = a.Zip(b).Count(p => p.First != p.Second);
            Assert.True(differ <= a.Length / 500, $"{name}: {differ} of {a.Length} stored values differ from quantc's grid");
        }
        return q["present.0.key"].Shape;
    }

    /// <summary>The stored cache in CausalAttention with a batch: row 1 left-padded, a stored past of random codes, prefill and
    /// decode shapes — each row's logits and stored present are those of the row run alone.</summary>
    [Theory]
    [InlineData(8, 7, 5)]
    [InlineData(4, 1, 9)]
    public void BatchRowsOfAStoredCacheAreIndependent(int bits, int seq, int past)
    {
        using var m = LoadLlama(_dir, "torch");
        RunRecipe(m, $"passes: [fuse_norm, fuse_rope, fuse_attention, lower_attention, {{quantize_kv: {{storage: native, bits: {bits}}}}}]",
            Calibration(m, 2));
        using var compiled = Model.Load(Save(_dir, m));
        var stored = KvStorage.Of(compiled.Metadata);
        var rng = new Random(bits + seq);
        int total = past + seq, pad = 3;
        CalibrationSample Row(int b, long[] ids, Dictionary<string, float[]> pasts)
        {
            var s = new CalibrationSample();
            s.Inputs["input_ids"] = (ids, [1, seq]);
            s.Inputs["attention_mask"] = (Enumerable.Range(0, total).Select(j => b == 1 && j < pad ? 0L : 1L).ToArray(), [1, total]);
            s.Inputs["position_ids"] = (Enumerable.Range(past, seq).Select(p => (long)Math.Max(0, p - (b == 1 ? pad : 0))).ToArray(),
                [1, seq]);
            foreach (var (name, x) in pasts) s.Inputs[name] = stored.Quantize(name, x, [1, 2, past, 32]);
            return s;
        }
        var rows = Enumerable.Range(0, 2).Select(b => (Ids: Enumerable.Range(0, seq).Select(_ => (long)rng.Next(32, 120)).ToArray(),
            Pasts: compiled.Graph.Inputs.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)).ToDictionary(i => i.Name,
                _ => Enumerable.Range(0, 2 * past * 32).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()))).ToList();
        var one = rows.Select((r, b) => Row(b, r.Ids, r.Pasts)).ToList();
        var both = new CalibrationSample();
        foreach (var name in one[0].Inputs.Keys)
        {
            var (a0, s0) = one[0].Inputs[name];
            var (a1, _) = one[1].Inputs[name];
            var joined = Array.CreateInstance(a0.GetType().GetElementType()!, a0.Length + a1.Length);
            Array.Copy(a0, 0, joined, 0, a0.Length);
            Array.Copy(a1, 0, joined, a0.Length, a1.Length);
            both.Inputs[name] = (joined, [2, .. s0[1..]]);
        }
        using var session = OrtModel.CreateSession(compiled);
        var batch = Raw(session, both);
        for (int b = 0; b < 2; b++)
        {
            var alone = Raw(session, one[b]);
            foreach (var (name, (data, _)) in alone)
            {
                var whole = batch[name].Data;
                int n = data.Length;
                for (int i = 0; i < n; i++)
                    Assert.True(Equals(data.GetValue(i), whole.GetValue(b * n + i)), $"{name} row {b} element {i} differs in the batch");
            }
        }
    }

    [Fact]
    public void AttentionOtherThanGroupQueryAttentionIsLeftFloatWithTheReason()
    {
        using var m = LoadLlama(_dir, "torch");
        var ctx = RunRecipe(m, "passes: [fuse_norm, fuse_rope, fuse_attention, {quantize_kv: {storage: native, bits: 8}}]",
            Calibration(m, 2));
        Assert.Equal(4, ctx.Notices.Count(l => l.EndsWith("cache left as it is (storage native): a stored integer cache needs " +
            "com.microsoft GroupQueryAttention (ONNX Runtime's attention with a quantized past/present) or ai.quantc.CausalAttention " +
            "(lower_attention); this is Attention", StringComparison.Ordinal)));
        Assert.Contains("quantize_kv: storage native: none of the 4 attention(s) can store its cache as integers", ctx.Notices);
        Assert.All(m.Graph.Inputs.Where(v => v.Name.StartsWith("past_", StringComparison.Ordinal)),
            v => Assert.Equal((int)DT.Float, v.ElementType));
        Assert.DoesNotContain(m.Metadata, kv => kv.Key == KvStorage.Key);
    }

    [Theory]
    [InlineData("{storage: native, bits: 8, symmetric: true}", "storage native is static symmetric")]
    [InlineData("{storage: native, bits: 8, keys: false}", "stores keys and values alike")]
    [InlineData("{storage: native, format: fp8}", "storage native stores an integer grid")]
    [InlineData("{bits: 8, per_channel: false}", "per_channel is an option of storage: native")]
    public void BadCombinationsAreRefused(string options, string words)
    {
        using var m = LoadLlama(_dir, "ortgenai");
        var e = Assert.Throws<BadInputException>(() => RunRecipe(m, $"passes: [{{quantize_kv: {options}}}]", Calibration(m, 1)));
        Assert.Contains(words, e.Message);
    }

    /// <summary>ai.quantc.CausalAttention stores the cache too (kv_cache_bit_width, the scales as attributes), in the same bytes as
    /// GroupQueryAttention: lower_attention takes a stored GroupQueryAttention over as it is, and quantize_kv stores the cache of
    /// a CausalAttention that lower_attention made from a torch export's attention — both orders, both graph shapes.</summary>
    [Theory]
    [InlineData("ortgenai", "{quantize_kv: {storage: native, bits: 8}}, lower_attention", 8)]
    [InlineData("ortgenai", "lower_attention, {quantize_kv: {storage: native, bits: 4}}", 4)]
    [InlineData("torch", "fuse_norm, fuse_rope, fuse_attention, lower_attention, {quantize_kv: {storage: native, bits: 8}}", 8)]
    [InlineData("torch", "fuse_norm, fuse_rope, fuse_attention, {lower_attention: {int8: true}}, " +
        "{quantize_kv: {storage: native, bits: 4, per_channel: false}}", 4)]
    public void CausalAttentionStoresTheCacheAsGroupQueryAttentionDoes(string flavor, string passes, int bits)
    {
        using var original = LoadLlama(_dir, flavor);
        using var m = LoadLlama(_dir, flavor);
        var ctx = RunRecipe(m, $"passes: [{passes}]", Calibration(m, 4));
        var ops = m.Graph.Nodes.Where(n => n.Is("CausalAttention", CustomOps.Domain)).ToList();
        Assert.Equal(4, ops.Count);
        Assert.All(ops, n => Assert.Equal(bits, n.GetInt("kv_cache_bit_width", 0)));
        Assert.DoesNotContain(m.Graph.Nodes, n => n.Is("GroupQueryAttention", "com.microsoft"));
        if (passes.StartsWith("{quantize_kv", StringComparison.Ordinal))
            Assert.Contains("lower_attention: 4 with the cache stored as integers (the same bytes, the scales as attributes)", ctx.Log);
        using var compiled = Model.Load(Save(_dir, m));
        var stored = KvStorage.Of(compiled.Metadata);
        Assert.Equal(bits == 8 ? (int)DT.Int8 : (int)DT.Uint8, compiled.Graph.Inputs.Single(v => v.Name == "past_key_values.0.key").ElementType);
        StoredIsTheGrid(original, compiled, stored);   // as GroupQueryAttention's bytes are
        var d = DataLoader.Load(original, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SequenceLength = 64, MaxSamples = 4 });
        var r = Verifier.Run(original, compiled, d.Samples, d.Tokens, new VerifyOptions { PerLayer = false });
        double logits = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{flavor} {passes}: logits {logits:0.00} dB, greedy {r.Greedy?.Matching}/{r.Greedy?.Steps}");
        Assert.True(logits > (bits == 8 ? 30 : 15), $"logits SQNR {logits:0.00} dB");
        Assert.NotNull(r.Greedy);
    }

    /// <summary>The same stored cache in GroupQueryAttention and, lowered, in CausalAttention: the same numbers up to the float
    /// rounding of the two kernels (a rare grid step apart where it falls on a rounding edge).</summary>
    [Fact]
    public void TheLoweredStoredCacheGivesGroupQueryAttentionsNumbers()
    {
        using var m = LoadLlama(_dir, "ortgenai");
        RunRecipe(m, Recipe(8, true), Calibration(m, 4));
        using var gqa = Model.Load(Save(_dir, m));
        RunRecipe(m, "passes: [lower_attention]");
        using var lowered = Model.Load(Save(_dir, m));
        Assert.Equal(4, lowered.Graph.Nodes.Count(n => n.Is("CausalAttention", CustomOps.Domain)));
        var d = DataLoader.Load(gqa, Path.Combine(AppContext.BaseDirectory, "eval.txt"),
            new DataOptions { SequenceLength = 64, MaxSamples = 4 });
        var r = Verifier.Run(gqa, lowered, d.Samples, d.Tokens, new VerifyOptions { PerLayer = false });
        double logits = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"GroupQueryAttention → CausalAttention, both int8 caches: logits {logits:0.00} dB, greedy {r.Greedy?.Matching}/64");
        Assert.True(logits > 45, $"logits SQNR {logits:0.00} dB");
    }

    [Fact]
    public void TheStoredFormatRoundTripsAndRejectsMalformedMetadata()
    {
        var s = KvStorage.Of([new("quantc.kv_cache_storage", KvStorage.Group(4, 2, 4, [0.5f, 1, 2, 4, 0.25f, 0.5f, 1, 2], ["a", "b"]))]);
        float[] x = [0.5f, -1, 2, 28, -2, 1, -4, 12, 0.25f, 0.5f, -1, -16, 100, -100, 0, 0];
        var (data, shape) = s.Quantize("a", x, [1, 2, 2, 4]);
        Assert.Equal([1L, 2, 2, 2], shape);
        Assert.Equal([0.5f, -1, 2, 28, -2, 1, -4, 12, 0.25f, 0.5f, -1, -16, 1.75f, -4, 0, 0], s.Dequantize("b", data, shape));
        Assert.Throws<BadInputException>(() => KvStorage.Of([new("quantc.kv_cache_storage", "8:2:4:1;2;3:a")]));
        Assert.Throws<BadInputException>(() => KvStorage.Of([new("quantc.kv_cache_storage", "4:2:3:1:a")]));
        Assert.Throws<BadInputException>(() => KvStorage.Of([new("quantc.kv_cache_storage", "8:2:4:-1:a")]));
    }
}
