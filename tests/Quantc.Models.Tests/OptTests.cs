using System.Globalization;
using Xunit.Abstractions;

namespace Quantc.Models.Tests;

public class OptTests(ITestOutputHelper output)
{
    [Fact]
    public void TinyOptRunsAndItsKvCacheIsConsistent()
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, "torch");
        using var d = new Decoder(m);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        int n = ids.Length - 1;
        var full = d.Run(ids);
        Assert.All(full["logits"].Data, x => Assert.True(float.IsFinite(x)));
        var step = d.Run([ids[n]], d.Run(ids[..n]));
        double scale = full["logits"].Data.Max(Math.Abs);
        LlamaTests.AssertClose(full["logits"].Data.AsSpan(n * ByteVocab.Size, ByteVocab.Size), step["logits"].Data, 1e-4, 1e-5 * scale, "opt decode step vs prefill n+1");
        LlamaTests.AssertClose(full["present.3.key"].Data, step["present.3.key"].Data, 1e-4, 1e-5, "opt present.3.key");
    }

    [Fact]
    public void OptLayerNormOutputsHaveShiftedAndOutlierChannels()
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, "torch");
        int[] Ints(string key) => m.Metadata.Single(kv => kv.Key == key).Value.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var shifted = Ints("quantc.outliers.shifted_channels");
        var outliers = Ints("quantc.outliers.channels");
        var cfg = OptConfig.ForSize("tiny");
        var names = Enumerable.Range(0, cfg.NumLayers).SelectMany(i => new[] { $"/model/decoder/layers.{i}/self_attn_layer_norm/LayerNormalization_output_0", $"/model/decoder/layers.{i}/final_layer_norm/LayerNormalization_output_0" }).ToList();
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
                output.WriteLine($"{name}: shifted {string.Join(", ", oneSided.Select(c => $"{c} (mean {mean[c]:F1}, range [{min[c]:F1}, {max[c]:F1}])"))}; median |mean| {medMean:F3}; outlier channels {string.Join(", ", big.Select(c => $"{c} ({absMax[c] / medAbsMax:F0}×)"))}");
            Assert.Equal(shifted, oneSided);
            Assert.InRange(big.Length, 2, outliers.Length);
            Assert.All(big, c => Assert.Contains(c, outliers));
        }
    }
}
