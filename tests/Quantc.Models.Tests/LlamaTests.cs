using Xunit.Abstractions;

namespace Quantc.Models.Tests;

public class LlamaTests(ITestOutputHelper output)
{
    internal static long[] Tokens(string text) => [ByteVocab.Bos, .. System.Text.Encoding.UTF8.GetBytes(text).Select(b => (long)b)];

    internal const string Sample = "Quantization maps real numbers to a small set of levels.\nEach level is a step; the error is half a step at most.\n";

    /// <summary>|a − b| ≤ rtol·|b| + atol elementwise; returns the worst relative excess for the message.</summary>
    internal static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double rtol, double atol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(expected[i] - actual[i]), tol = rtol * Math.Abs(expected[i]) + atol;
            if (!(err <= tol) && err / tol > worst) { worst = err / tol; at = i; }
        }
        Assert.True(at < 0, $"{what}: element {at} expected {(at < 0 ? 0 : expected[at])}, got {(at < 0 ? 0 : actual[at])} ({worst:F1}× the tolerance)");
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void TinyRunsInOnnxRuntime(string flavor)
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, flavor);
        using var d = new Decoder(m);
        var ids = Tokens("Hello, world.\nSecond line.");
        var r = d.Run(ids);
        var logits = r["logits"];
        Assert.Equal([1, ids.Length, ByteVocab.Size], logits.Shape);
        Assert.All(logits.Data, x => Assert.True(float.IsFinite(x)));
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal([1, 2, ids.Length, 32], r[$"present.{i}.key"].Shape);
            Assert.Equal([1, 2, ids.Length, 32], r[$"present.{i}.value"].Shape);
        }
    }

    [Fact]
    public void TorchGraphMatchesTheCSharpReference() => MatchesTheCSharpReference(LlamaConfig.ForSize("tiny"), "torch");

    /// <summary>ORT's logits of the built graph against the C# reference forward of the same weights; returns the model's initializers.</summary>
    private static List<(string Name, long Elements)> MatchesTheCSharpReference(LlamaConfig cfg, string flavor)
    {
        var weights = new SyntheticLlamaWeights(cfg, 0);
        using var m = LlamaBuilder.Build(cfg, weights, flavor);
        using var d = new Decoder(m);
        var ids = Tokens(Sample);
        var ort = d.Run(ids, only: ["logits"])["logits"];
        var reference = new LlamaReference(cfg, weights.Generator).Forward(ids)!;
        double scale = reference.Max(Math.Abs);
        AssertClose(reference, ort.Data, 1e-3, 1e-4 * scale, "ORT logits vs C# reference");
        return m.Graph.Initializers.Select(v => (v.Name, v.Initializer!.ElementCount)).ToList();
    }

    /// <summary>Qwen2's variant of the decoder (biases on q/k/v, the head tied to the input embedding) against the same C# reference, both flavors.</summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void Qwen2GraphMatchesTheCSharpReference(string flavor)
    {
        var cfg = LlamaConfig.ForSize("tiny", "qwen2");
        Assert.True(cfg.AttentionBias && cfg.TieWordEmbeddings);
        var initializers = MatchesTheCSharpReference(cfg, flavor);
        Assert.DoesNotContain(initializers, v => v.Name == "lm_head.weight");
        Assert.Equal(12, initializers.Count(v => v.Name.EndsWith("_proj.bias", StringComparison.Ordinal)));
        Assert.Equal(cfg.ParameterCount, initializers.Where(v => v.Name.StartsWith("model.", StringComparison.Ordinal) && !v.Name.Contains("rotary_emb", StringComparison.Ordinal))
            .Sum(v => v.Elements));
    }

    [Fact]
    public void FlavorsComputeTheSameFunction()
    {
        using var torch = ReferenceModels.Build("llama", "tiny", 0, "torch");
        using var genai = ReferenceModels.Build("llama", "tiny", 0, "ortgenai");
        using var dt = new Decoder(torch);
        using var dg = new Decoder(genai);
        var ids = Tokens(Sample);
        var a = dt.Run(ids);
        var b = dg.Run(ids);
        double scale = a["logits"].Data.Max(Math.Abs);
        AssertClose(a["logits"].Data, b["logits"].Data, 1e-3, 1e-4 * scale, "logits torch vs ortgenai");
        for (int i = 0; i < 4; i++)
        {
            AssertClose(a[$"present.{i}.key"].Data, b[$"present.{i}.key"].Data, 1e-3, 1e-3, $"present.{i}.key");
            AssertClose(a[$"present.{i}.value"].Data, b[$"present.{i}.value"].Data, 1e-3, 1e-3, $"present.{i}.value");
        }
        // And decoding one step from the same cache agrees too.
        var next = dt.Run([(long)'x'], a);
        var nextG = dg.Run([(long)'x'], b);
        AssertClose(next["logits"].Data, nextG["logits"].Data, 1e-3, 1e-4 * scale, "decode logits torch vs ortgenai");
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void KvCacheDecodeEqualsLongerPrefill(string flavor)
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, flavor);
        using var d = new Decoder(m);
        var ids = Tokens(Sample);
        int n = ids.Length - 1;
        var prefill = d.Run(ids[..n]);
        var step = d.Run([ids[n]], prefill);
        var full = d.Run(ids);
        var fullLast = full["logits"].Data.AsSpan(n * ByteVocab.Size, ByteVocab.Size);
        double scale = full["logits"].Data.Max(Math.Abs);
        AssertClose(fullLast, step["logits"].Data, 1e-4, 1e-5 * scale, "decode-step logits vs prefill n+1");
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(full[$"present.{i}.key"].Shape, step[$"present.{i}.key"].Shape);
            AssertClose(full[$"present.{i}.key"].Data, step[$"present.{i}.key"].Data, 1e-4, 1e-5, $"present.{i}.key");
            AssertClose(full[$"present.{i}.value"].Data, step[$"present.{i}.value"].Data, 1e-4, 1e-5, $"present.{i}.value");
        }
        // Several steps in a row stay consistent.
        var cache = d.Run(ids[..(n - 3)]);
        Dictionary<string, Arr> last = cache;
        for (int k = n - 3; k <= n; k++) last = d.Run([ids[k]], last);
        AssertClose(fullLast, last["logits"].Data, 1e-4, 1e-5 * scale, "four decode steps vs prefill");
        output.WriteLine($"{flavor}: max |logit| {scale:G4}");
    }

    [Theory]
    [InlineData("llama", "torch")]
    [InlineData("llama", "ortgenai")]
    [InlineData("qwen2", "torch")]
    [InlineData("opt", "torch")]
    [InlineData("opt", "fused")]
    [InlineData("mamba", "torch")]
    public void BuildsAreDeterministic(string arch, string flavor)
    {
        var dir = Directory.CreateTempSubdirectory("quantc-models-");
        try
        {
            var a = ReferenceModels.BuildAndSave(arch, "tiny", 7, flavor, Path.Combine(dir.FullName, "a.onnx"));
            var b = ReferenceModels.BuildAndSave(arch, "tiny", 7, flavor, Path.Combine(dir.FullName, "b.onnx"));
            Assert.Equal(File.ReadAllBytes(a.ModelPath), File.ReadAllBytes(b.ModelPath));
            var c = ReferenceModels.BuildAndSave(arch, "tiny", 8, flavor, Path.Combine(dir.FullName, "c.onnx"));
            Assert.NotEqual(File.ReadAllBytes(a.ModelPath), File.ReadAllBytes(c.ModelPath));
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void GraphHasTheTorchExportShape()
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, "torch");
        var ops = m.Graph.Nodes.GroupBy(n => n.OpType).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(4 * 7 + 1, ops["MatMul"] - 4 * 2);        // 7 linear layers per block + lm_head, plus 2 attention MatMuls per block
        Assert.Equal(9, ops["Pow"]);                           // 2 RMSNorms per layer + final
        Assert.Equal(9, ops["Reciprocal"]);
        Assert.Equal(8, ops["Neg"]);                           // rotate-half for q and k
        Assert.Equal(8, ops["Expand"]);                        // repeat-kv for k and v
        Assert.False(ops.ContainsKey("Gemm"));
        var q = m.Graph["model.layers.2.self_attn.q_proj.weight"];
        Assert.Equal([128L, 128L], q.Initializer!.Dims);
        Assert.Equal([128L, 64L], m.Graph["model.layers.2.self_attn.k_proj.weight"].Initializer!.Dims);
        Assert.Equal("/model/layers.2/self_attn/q_proj/MatMul", q.Uses.Single().Node.Name);
        Assert.Equal([128L, 344L], m.Graph["model.layers.0.mlp.gate_proj.weight"].Initializer!.Dims);
        Assert.Contains(m.Metadata, kv => kv.Key == "quantc.tokenizer" && kv.Value == "byte");
    }

    [Fact]
    public void GraphHasTheGenAiShape()
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, "ortgenai");
        var ops = m.Graph.Nodes.GroupBy(n => (n.Domain, n.OpType)).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(1, ops[("", "SimplifiedLayerNormalization")]);
        Assert.Equal(8, ops[("com.microsoft", "SkipSimplifiedLayerNormalization")]);
        Assert.Equal(8, ops[("com.microsoft", "RotaryEmbedding")]);
        Assert.Equal(4, ops[("com.microsoft", "GroupQueryAttention")]);
        Assert.Equal(4 * 7 + 1, ops[("", "MatMul")]);
        Assert.False(ops.ContainsKey(("", "Softmax")));
    }

    [Theory]
    [InlineData("llama", "small")]
    [InlineData("llama", "1b")]
    [InlineData("opt", "small")]
    [InlineData("opt", "1b")]
    [InlineData("mamba", "small")]
    [InlineData("mamba", "1b")]
    public void LargerSizesHaveTheAdvertisedParameterCounts(string arch, string size)
    {
        long p = ReferenceModels.ParameterCount(arch, size);
        output.WriteLine($"{arch} {size}: {p:N0} parameters");
        if (size == "small") Assert.InRange(p, 10_000_000, 99_000_000);
        else Assert.InRange(p, 900_000_000, 1_400_000_000);
    }
}
