using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Onnx;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>lower_attention: fuse_attention's ONNX Attention on the causal + padding mask → ai.quantc.CausalAttention, same
/// outputs and cache.</summary>
public sealed class LowerAttentionTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-lower-attention");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Compile(string passes, out List<string> lines, string flavor = "torch")
    {
        using var m = OrtRuns.LoadLlama(_dir, flavor);
        lines = [.. OrtRuns.RunRecipe(m, $"passes: {passes}").Log];
        foreach (var l in lines.Where(l => l.StartsWith("lower_attention", StringComparison.Ordinal))) log.WriteLine(l);
        return Model.Load(OrtRuns.Save(_dir, m));
    }

    /// <summary>Batch 2 of <paramref name="seq"/> new tokens after a <paramref name="past"/>-token cache (random, [2, 2, past, 32]),
    /// row 1 left-padded by <paramref name="pad"/>.</summary>
    private static CalibrationSample Sample(Graph g, int seq, int past, int pad, int seed)
    {
        var rng = new Random(seed);
        int total = past + seq;
        var s = new CalibrationSample();
        s.Inputs["input_ids"] = (Enumerable.Range(0, 2 * seq).Select(_ => (long)rng.Next(32, 120)).ToArray(), [2, seq]);
        var mask = Enumerable.Range(0, 2 * total).Select(i => i >= total && i - total < pad ? 0L : 1L).ToArray();
        s.Inputs["attention_mask"] = (mask, [2, total]);
        s.Inputs["position_ids"] = (Enumerable.Range(0, 2).SelectMany(b => Enumerable.Range(past, seq)
            .Select(p => (long)Math.Max(0, p - (b == 1 ? pad : 0)))).ToArray(), [2, seq]);
        foreach (var i in g.Inputs.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)))
        {
            var cache = Enumerable.Range(0, 2 * 2 * past * 32).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            s.Inputs[i.Name] = (cache, [2, 2, past, 32]);
        }
        return s;
    }

    [Theory]
    [InlineData("[fuse_norm, fuse_rope, fuse_attention]")]   // what the recipes run: Attention on the projections' 3-D tensors
    [InlineData("[fuse_attention]")]                         // Attention on [batch, heads, sequence, head size]
    public void TheCausalKernelGivesOnnxAttentionsOutputsAndCache(string fused)
    {
        using var onnx = Compile(fused, out _);
        using var lowered = Compile(fused.TrimEnd(']') + ", lower_attention]", out var lines);
        int attentions = onnx.Graph.Nodes.Count(n => n.Is("Attention"));
        Assert.Equal(4, attentions);
        Assert.Contains($"lower_attention: {attentions} of {attentions} ONNX Attention node(s) → ai.quantc.CausalAttention " +
            "(lower triangle " +
            $"only, {attentions} with the padding mask read from the model's attention_mask input)", lines);
        Assert.DoesNotContain(lowered.Graph.Nodes, n => n.Is("Attention") || n.Is("Where") || n.Is("Range"));
        Assert.Equal(attentions, lowered.Graph.Nodes.Count(n => n.Is("CausalAttention", CustomOps.Domain)));
        Assert.Equal(onnx.Graph.Outputs.Select(o => o.Name), lowered.Graph.Outputs.Select(o => o.Name));
        // The model map still sees the attentions, with their caches (GenAI's planning and the cache passes read them).
        var sites = LayerAnalysis.Analyze(lowered.Graph).Attention;
        Assert.Equal(attentions, sites.Count(a => a.Form == "CausalAttention" && a.Keys?.CacheInputs.Count == 1 &&
            a.Values?.CacheOutputs.Count == 1));

        AssertSameOutputs(onnx, lowered, "present.3.value");
    }

    /// <summary>Every output of <paramref name="onnx"/> and <paramref name="lowered"/> in ONNX Runtime within 1e-5 relative: prefill
    /// with and without a cache (S not a multiple of the kernel's tiles), and one decode step; row 1 left-padded.</summary>
    private void AssertSameOutputs(Model onnx, Model lowered, string logged)
    {
        using var a = OrtModel.CreateSession(onnx);
        using var b = OrtModel.CreateSession(lowered);
        foreach (var (seq, past, pad) in new[] { (37, 0, 3), (12, 5, 2), (1, 40, 4) })
        {
            var sample = Sample(onnx.Graph, seq, past, pad, seq + past);
            var oa = OrtRuns.Outputs(a, sample);
            var ob = OrtRuns.Outputs(b, sample);
            foreach (var (name, va) in oa)
            {
                double e = OrtRuns.MaxRelErr(va, ob[name]);
                if (name == "logits" || name == logged) log.WriteLine($"S {seq} past {past}: {name} max rel err {e:E2}");
                Assert.True(e <= 1e-5, $"{name} (S {seq}, past {past}): max relative error {e:E3}");
            }
        }
    }

    /// <summary>The fused form: the queries' and keys' RotaryEmbedding, rotate_qk's Hadamard (with its Reshapes) and the QKV Split
    /// of fuse_projections go inside the op; same outputs and cache (the keys as rotated) as the graph with those nodes in
    /// front, in prefill, with a cache and in decode, row 1 left-padded.</summary>
    [Theory]
    [InlineData("[rotate_qk, fuse_norm, fuse_rope, fuse_attention, fuse_projections]", "RoPE, the R3 Hadamard, the QKV split")]
    [InlineData("[fuse_norm, fuse_rope, fuse_attention, fuse_projections]", "RoPE, the QKV split")]
    [InlineData("[rotate_qk, fuse_norm, fuse_rope, fuse_attention]", "RoPE, the R3 Hadamard")]
    [InlineData("[rotate_qk, fuse_norm, fuse_attention, fuse_projections]", "the R3 Hadamard")]   // eager RoPE: 4-D Q, K, V
    public void RopeHadamardAndTheQkvSplitRunInsideTheOp(string fused, string inside)
    {
        using var onnx = Compile(fused, out _);
        using var lowered = Compile(fused.TrimEnd(']') + ", lower_attention]", out var lines);
        Assert.Contains($"lower_attention: 4 with {inside} inside the op (fewer nodes per decode step)", lines);
        int Count(Model m, string op, string domain = "") => m.Graph.Nodes.Count(n => n.Is(op, domain));
        Assert.Equal(0, Count(lowered, "Hadamard", CustomOps.Domain));
        if (inside.Contains("RoPE", StringComparison.Ordinal)) Assert.Equal(0, Count(lowered, "RotaryEmbedding"));
        bool packed = inside.Contains("split", StringComparison.Ordinal);
        Assert.Equal(Count(onnx, "Split") - (packed ? 4 : 0), Count(lowered, "Split"));
        var ops = lowered.Graph.Nodes.Where(n => n.Is("CausalAttention", CustomOps.Domain)).ToList();
        Assert.Equal(4, ops.Count);
        Assert.All(ops, n => Assert.Equal(packed ? 1 : 0, n.GetInt("packed_qkv", 0)));
        Assert.All(ops, n => Assert.Equal(inside.Contains("Hadamard", StringComparison.Ordinal) ? 1 : 0, n.GetInt("qk_hadamard", 0)));
        if (packed) Assert.All(ops, n => Assert.Same(n.Inputs[0], n.Inputs[1]));
        // The map reports the keys as transformed inside (passes that rotate or quantize keys leave such a site alone).
        Assert.All(LayerAnalysis.Analyze(lowered.Graph).Attention, a => Assert.NotNull(a.RopeInside ?? a.KeysWhy));

        AssertSameOutputs(onnx, lowered, "present.3.key");
    }

    /// <summary><c>lower_attention: { int8: true }</c>: every op gets the int8 attribute and the log says so; prefill (with and
    /// without a cache) is an approximation of the float op — close, not equal — with the first layer's present cache still
    /// exact (the cache stays float); a decode step is the float kernel, so every output equals the float-lowered model's.</summary>
    [Fact]
    public void Int8AttentionApproximatesPrefillAndLeavesDecodeExact()
    {
        const string front = "[rotate_qk, fuse_norm, fuse_rope, fuse_attention, fuse_projections, ";
        using var flt = Compile(front + "lower_attention]", out _);
        using var q8 = Compile(front + "{ lower_attention: { int8: true } }]", out var lines);
        Assert.Contains("lower_attention: 4 of 4 ONNX Attention node(s) → ai.quantc.CausalAttention (lower triangle only, 4 with " +
            "the padding mask read from the model's attention_mask input; int8: prefill's Q·Kᵀ and P·V in int8, decode steps in float)",
            lines);
        var ops = q8.Graph.Nodes.Where(n => n.Is("CausalAttention", CustomOps.Domain)).ToList();
        Assert.Equal(4, ops.Count);
        Assert.All(ops, n => Assert.Equal(1, n.GetInt("int8", 0)));
        Assert.All(flt.Graph.Nodes.Where(n => n.Is("CausalAttention", CustomOps.Domain)), n => Assert.Equal(0, n.GetInt("int8", 0)));
        using var a = OrtModel.CreateSession(flt);
        using var b = OrtModel.CreateSession(q8);
        foreach (var (seq, past, pad) in new[] { (37, 0, 3), (70, 5, 2), (1, 40, 4) })
        {
            var sample = Sample(flt.Graph, seq, past, pad, seq + past);
            var oa = OrtRuns.Outputs(a, sample);
            var ob = OrtRuns.Outputs(b, sample);
            double sig = 0, err = 0;
            for (int i = 0; i < oa["logits"].Length; i++)
            {
                double x = oa["logits"][i], d = ob["logits"][i] - x;
                sig += x * x;
                err += d * d;
            }
            double db = 10 * Math.Log10(sig / Math.Max(err, 1e-300));
            log.WriteLine($"S {seq} past {past}: logits of the int8 attention against the float one: {db:F1} dB");
            Assert.Equal(oa["present.0.key"], ob["present.0.key"]);
            Assert.Equal(oa["present.0.value"], ob["present.0.value"]);
            if (seq == 1)
            {
                foreach (var (name, va) in oa) Assert.Equal(va, ob[name]);
                continue;
            }
            Assert.InRange(db, 25, 90);
        }
    }

    /// <summary>The ortgenai flavor's com.microsoft GroupQueryAttention (seqlens_k = Σ attention_mask − 1) becomes CausalAttention
    /// reading the mask: the same outputs and present cache in ONNX Runtime for unpadded rows (prefill, decode), and at the valid positions of a right-padded row — the only padding GQA's seqlens_k expresses. With the R3
    /// Hadamard in front (rotate_qk) it goes inside the op too.</summary>
    [Theory]
    [InlineData("[lower_attention]", "")]
    [InlineData("[rotate_qk, lower_attention]", "the R3 Hadamard")]
    public void GroupQueryAttentionBecomesTheCausalOp(string passes, string inside)
    {
        using var gqa = Compile(passes.Replace("lower_attention", "fuse_norm", StringComparison.Ordinal), out _, "ortgenai");
        using var lowered = Compile(passes, out var lines, "ortgenai");
        Assert.Equal(4, gqa.Graph.Nodes.Count(n => n.Is("GroupQueryAttention", "com.microsoft")));
        Assert.Contains("lower_attention: 4 of 4 com.microsoft GroupQueryAttention node(s) → ai.quantc.CausalAttention (lower " +
            "triangle only, the padding read from the attention_mask behind seqlens_k)", lines);
        if (inside != "") Assert.Contains($"lower_attention: 4 with {inside} inside the op (fewer nodes per decode step)", lines);
        Assert.DoesNotContain(lowered.Graph.Nodes, n => n.Is("GroupQueryAttention", "com.microsoft") || n.Is("ReduceSum"));
        var ops = lowered.Graph.Nodes.Where(n => n.Is("CausalAttention", CustomOps.Domain)).ToList();
        Assert.Equal(4, ops.Count);
        Assert.All(ops, n => Assert.Equal("attention_mask", n.Inputs[3]!.Name));
        Assert.Equal(4, LayerAnalysis.Analyze(lowered.Graph).Attention.Count(a => a.Form == "CausalAttention" && a.Keys is not null));
        using var a = OrtModel.CreateSession(gqa);
        using var b = OrtModel.CreateSession(lowered);
        // (ONNX Runtime's GQA refuses a batch of 2 with a cache and more than one new token, so no chunked prefill here.)
        foreach (var (seq, past, rightPad) in new[] { (37, 0, 0), (1, 40, 0), (21, 0, 6) })
        {
            var sample = Sample(gqa.Graph, seq, past, 0, seq + past);
            if (rightPad > 0)
            {
                var (mask, shape) = sample.Inputs["attention_mask"];
                var m = (long[])mask;
                for (int j = seq - rightPad; j < seq; j++) m[seq + j] = 0;   // row 1: its last tokens are padding
                sample.Inputs["attention_mask"] = (m, shape);
            }
            var oa = OrtRuns.Outputs(a, sample);
            var ob = OrtRuns.Outputs(b, sample);
            if (rightPad == 0)
            {
                foreach (var (name, va) in oa)
                {
                    double e = OrtRuns.MaxRelErr(va, ob[name]);
                    if (name == "logits") log.WriteLine($"S {seq} past {past}: logits max rel err {e:E2}");
                    Assert.True(e <= 1e-5, $"{name} (S {seq}, past {past}): max relative error {e:E3}");
                }
                continue;
            }
            // Right padding: the logits of every valid position (row 0 all, row 1 the first seq − rightPad).
            int vocab = oa["logits"].Length / (2 * seq);
            for (int row = 0; row < 2; row++)
            {
                int valid = row == 0 ? seq : seq - rightPad;
                var x = oa["logits"].AsSpan((row * seq) * vocab, valid * vocab).ToArray();
                var y = ob["logits"].AsSpan((row * seq) * vocab, valid * vocab).ToArray();
                double e = OrtRuns.MaxRelErr(x, y);
                log.WriteLine($"right-padded S {seq}, row {row}: logits max rel err {e:E2} over {valid} positions");
                Assert.True(e <= 1e-5, $"row {row}: max relative error {e:E3}");
            }
        }
    }

    /// <summary>A GroupQueryAttention the op cannot run is left with the reason: a local window, RoPE inside (do_rotary), a
    /// seqlens_k that is not computed from the mask.</summary>
    [Fact]
    public void AGroupQueryAttentionTheOpCannotRunIsLeftWithTheReason()
    {
        using var m = OrtRuns.LoadLlama(_dir, "ortgenai");
        var gqa = m.Graph.Nodes.Where(n => n.Is("GroupQueryAttention", "com.microsoft")).ToList();
        gqa[0].SetAttribute("local_window_size", 16L);
        gqa[1].SetAttribute("do_rotary", 1L);
        gqa[2].SetInput(5, m.Graph.AddInitializer(Tensor.FromValues<int>("fixed_seqlens", 6, [1], [7])));
        var lines = OrtRuns.RunRecipe(m, "passes: [lower_attention]").Log;
        foreach (var l in lines) log.WriteLine(l);
        Assert.Contains(lines, l => l.EndsWith("left as GroupQueryAttention: attribute local_window_size is set (the causal kernel " +
            "has no such option)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.EndsWith("left as GroupQueryAttention: RoPE inside GroupQueryAttention (do_rotary = 1; the op " +
            "takes RoPE with explicit position ids)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("left as GroupQueryAttention: seqlens_k is not Cast(ReduceSum(attention_mask, axis 1) − 1)",
            StringComparison.Ordinal));
        Assert.Contains("lower_attention: 1 of 4 com.microsoft GroupQueryAttention node(s) → ai.quantc.CausalAttention (lower " +
            "triangle only, the padding read from the attention_mask behind seqlens_k)", lines);
        Assert.Equal(3, m.Graph.Nodes.Count(n => n.Is("GroupQueryAttention", "com.microsoft")));
    }

    /// <summary>A mask that is not the exporters' causal one (here: −1e9 instead of float32 lowest) is left as ONNX Attention, with
    /// the reason.</summary>
    [Fact]
    public void AnotherMaskIsLeftWithTheReason()
    {
        using var m = OrtRuns.LoadLlama(_dir, "torch");
        OrtRuns.RunRecipe(m, "passes: [fuse_attention]");
        var where = m.Graph.Nodes.Single(n => n.Is("Where"));
        where.SetInput(2, m.Graph.AddInitializer(Tensor.FromFloats("other_low", [], [-1e9f])));
        var lines = OrtRuns.RunRecipe(m, "passes: [lower_attention]").Log;
        foreach (var l in lines) log.WriteLine(l);
        Assert.Contains(lines, l => l.Contains("left as ONNX Attention: the mask's Where gives 0 where allowed and -1E+09 elsewhere",
            StringComparison.Ordinal));
        Assert.Contains("lower_attention: 0 of 4 ONNX Attention node(s) → ai.quantc.CausalAttention (lower triangle only)", lines);
        Assert.Equal(4, m.Graph.Nodes.Count(n => n.Is("Attention")));
    }
}
