using System.Globalization;
using Xunit.Abstractions;

namespace Quantc.Models.Tests;

public class OptTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("torch")]
    [InlineData("fused")]
    public void TinyOptRunsAndItsKvCacheIsConsistent(string flavor)
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, flavor);
        using var d = new Decoder(m);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        int n = ids.Length - 1;
        var full = d.Run(ids);
        Assert.All(full["logits"].Data, x => Assert.True(float.IsFinite(x)));
        var step = d.Run([ids[n]], d.Run(ids[..n]));
        double scale = full["logits"].Data.Max(Math.Abs);
        LlamaTests.AssertClose(full["logits"].Data.AsSpan(n * ByteVocab.Size, ByteVocab.Size), step["logits"].Data, 1e-4, 1e-5 * scale, $"opt {flavor} decode step vs prefill n+1");
        LlamaTests.AssertClose(full["present.3.key"].Data, step["present.3.key"].Data, 1e-4, 1e-5, $"opt {flavor} present.3.key");
        LlamaTests.AssertClose(full["present.3.value"].Data, step["present.3.value"].Data, 1e-4, 1e-5, $"opt {flavor} present.3.value");
    }

    /// <summary>The fused flavor computes the torch flavor's function over the same weights: logits and KV cache agree (rtol 1e-4), prefill and decode.</summary>
    [Fact]
    public void FusedFlavorEqualsTorchFlavor()
    {
        using var torch = ReferenceModels.Build("opt", "tiny", 0, "torch");
        using var fused = ReferenceModels.Build("opt", "tiny", 0, "fused");
        // Same weights, bit for bit, and the same recorded outlier placement.
        var weights = torch.Graph.Initializers.Where(v => v.Name.StartsWith("model.", StringComparison.Ordinal) || v.Name == "lm_head.weight").ToList();
        Assert.Equal(weights.Count, fused.Graph.Initializers.Count(v => v.Name.StartsWith("model.", StringComparison.Ordinal) || v.Name == "lm_head.weight"));
        foreach (var v in weights) Assert.Equal(v.Initializer!.ToFloat32(), fused.Graph[v.Name].Initializer!.ToFloat32());
        Assert.Equal(torch.Metadata.Where(kv => kv.Key.StartsWith("quantc.outliers.", StringComparison.Ordinal)), fused.Metadata.Where(kv => kv.Key.StartsWith("quantc.outliers.", StringComparison.Ordinal)));
        using var dt = new Decoder(torch);
        using var df = new Decoder(fused);
        var ids = LlamaTests.Tokens(File.ReadAllText(Repo.Path("models/eval.txt"))[..96]);
        var a = dt.Run(ids);
        var b = df.Run(ids);
        double scale = a["logits"].Data.Max(Math.Abs);
        LlamaTests.AssertClose(a["logits"].Data, b["logits"].Data, 1e-4, 1e-5 * scale, "logits torch vs fused");
        for (int i = 0; i < 4; i++)
        {
            LlamaTests.AssertClose(a[$"present.{i}.key"].Data, b[$"present.{i}.key"].Data, 1e-4, 1e-5, $"present.{i}.key");
            LlamaTests.AssertClose(a[$"present.{i}.value"].Data, b[$"present.{i}.value"].Data, 1e-4, 1e-5, $"present.{i}.value");
        }
        // Decoding from the other flavor's cache agrees too, and so does a left-padded batch row.
        var next = dt.Run([(long)'x'], a);
        var nextF = df.Run([(long)'x'], a);
        LlamaTests.AssertClose(next["logits"].Data, nextF["logits"].Data, 1e-4, 1e-5 * scale, "decode logits torch vs fused");
        var padMask = Enumerable.Range(0, ids.Length).Select(i => i < 5 ? 0L : 1L).ToArray();
        var pa = dt.Run(ids, attentionMask: padMask, only: ["logits"]);
        var pb = df.Run(ids, attentionMask: padMask, only: ["logits"]);
        LlamaTests.AssertClose(pa["logits"].Data.AsSpan(5 * ByteVocab.Size), pb["logits"].Data.AsSpan(5 * ByteVocab.Size), 1e-4, 1e-5 * scale, "padded logits torch vs fused");
        output.WriteLine($"max |logit| {scale:G4}");
    }

    /// <summary>The small size of the fused flavor is written with external data, runs, and still equals the torch flavor.</summary>
    [Fact]
    public void SmallFusedBuildsWithExternalDataAndEqualsTorch()
    {
        var dir = Directory.CreateTempSubdirectory("quantc-opt-small-");
        try
        {
            var ids = LlamaTests.Tokens("Small models are for benchmarks.\n");
            var logits = new Dictionary<string, float[]>();
            foreach (var flavor in new[] { "torch", "fused" })
            {
                var r = ReferenceModels.BuildAndSave("opt", "small", 0, flavor, Path.Combine(dir.FullName, $"small-{flavor}.onnx"));
                Assert.NotNull(r.ExternalDataPath);
                using var m = Quantc.Ir.Model.Load(r.ModelPath);
                using var d = new Decoder(m);
                logits[flavor] = d.Run(ids, only: ["logits"])["logits"].Data;
            }
            double scale = logits["torch"].Max(Math.Abs);
            LlamaTests.AssertClose(logits["torch"], logits["fused"], 1e-4, 1e-5 * scale, "small opt logits torch vs fused");
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void FusedGraphHasTheOnnxRuntimeOptimizerShape()
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, "fused");
        var ops = m.Graph.Nodes.GroupBy(n => (n.Domain, n.OpType)).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(1, ops[("", "LayerNormalization")]);                           // the embedding sum's
        Assert.Equal(4 * 2, ops[("com.microsoft", "SkipLayerNormalization")]);      // every residual add + LN
        Assert.Equal(4, ops[("com.microsoft", "MultiHeadAttention")]);
        Assert.Equal(4 * 6 + 1, ops[("", "MatMul")]);                               // q, k, v, out, fc1, fc2 + lm_head
        Assert.Equal(4 * 4 + 2, ops[("", "Add")]);                                  // q/k/v/fc1 biases, the embedding sum, the position offset
        Assert.False(ops.ContainsKey(("", "Softmax")));
        var sln = m.Graph.Nodes.Single(n => n.Name == "/model/decoder/layers.1/final_layer_norm/SkipLayerNorm");
        Assert.Equal(["model.decoder.layers.1.final_layer_norm.weight", "model.decoder.layers.1.final_layer_norm.bias", "model.decoder.layers.1.self_attn.out_proj.bias"],
            sln.Inputs.Skip(2).Select(v => v!.Name));
        Assert.Contains(m.Metadata, kv => kv.Key == "quantc.flavor" && kv.Value == "fused");
    }

    /// <summary>The output of the norm in <paramref name="scope"/> (LayerNormalization or SkipLayerNormalization, whichever the flavor has).</summary>
    internal static string NormOutput(Quantc.Ir.Model m, string scope) =>
        m.Graph.Nodes.Single(n => n.Name.StartsWith(scope + "/", StringComparison.Ordinal) && n.OpType is "LayerNormalization" or "SkipLayerNormalization").Outputs[0]!.Name;

    [Theory]
    [InlineData("torch")]
    [InlineData("fused")]
    public void OptLayerNormOutputsHaveShiftedAndOutlierChannels(string flavor)
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, flavor);
        int[] Ints(string key) => m.Metadata.Single(kv => kv.Key == key).Value.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var shifted = Ints("quantc.outliers.shifted_channels");
        var outliers = Ints("quantc.outliers.channels");
        var cfg = OptConfig.ForSize("tiny");
        var names = Enumerable.Range(0, cfg.NumLayers).SelectMany(i => new[] { NormOutput(m, $"/model/decoder/layers.{i}/self_attn_layer_norm"), NormOutput(m, $"/model/decoder/layers.{i}/final_layer_norm") }).ToList();
        using var d = new Decoder(m, names);
        var runs = Repo.CalibrationSamples(4, 128).Select(ids => d.Run(ids, only: names)).ToList();
        foreach (var name in names)
        {
            int h = cfg.HiddenSize;
            var mean = new double[h];
            var min = Enumerable.Repeat(double.MaxValue, h).ToArray();
            var max = Enumerable.Repeat(double.MinValue, h).ToArray();
            long count = 0;
            foreach (var r in runs)
            {
                var a = r[name].Data;
                for (int i = 0; i < a.Length; i++) { int c = i % h; mean[c] += a[i]; min[c] = Math.Min(min[c], a[i]); max[c] = Math.Max(max[c], a[i]); }
                count += a.Length / h;
            }
            for (int c = 0; c < h; c++) mean[c] /= count;
            var absMax = Enumerable.Range(0, h).Select(c => Math.Max(Math.Abs(min[c]), Math.Abs(max[c]))).ToArray();
            double medAbsMax = absMax.Order().ElementAt(h / 2);
            double medMean = mean.Select(Math.Abs).Order().ElementAt(h / 2);
            // Shifted: the channel's whole range lies on one side of zero and its mean is ≥ 10× the median |mean|.
            var oneSided = Enumerable.Range(0, h).Where(c => (min[c] > 0 || max[c] < 0) && Math.Abs(mean[c]) >= 10 * medMean).ToArray();
            var big = Enumerable.Range(0, h).Where(c => absMax[c] >= 20 * medAbsMax).ToArray();
            if (name.Contains("layers.0/", StringComparison.Ordinal))
                output.WriteLine($"{flavor} {name}: shifted {string.Join(", ", oneSided.Select(c => $"{c} (mean {mean[c]:F1}, range [{min[c]:F1}, {max[c]:F1}])"))}; median |mean| {medMean:F3}; outlier channels {string.Join(", ", big.Select(c => $"{c} ({absMax[c] / medAbsMax:F0}×)"))}");
            Assert.Equal(shifted, oneSided);
            Assert.InRange(big.Length, 2, outliers.Length);
            Assert.All(big, c => Assert.Contains(c, outliers));
        }
    }
}
