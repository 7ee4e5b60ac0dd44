using System.Globalization;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Models.Tests;

public class MambaTests(ITestOutputHelper output)
{
    private static (Model Model, MambaConfig Config, SyntheticMambaWeights Weights) Tiny()
    {
        var cfg = MambaConfig.ForSize("tiny");
        var w = new SyntheticMambaWeights(cfg, 0);
        return (MambaBuilder.Build(cfg, w), cfg, w);
    }

    [Fact]
    public void TinyMambaMatchesTheCSharpReference()
    {
        var (m, cfg, w) = Tiny();
        using var _ = m;
        using var d = new Decoder(m);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        var ort = d.Run(ids);
        var reference = new MambaReference(cfg, w.Values);
        var convStates = Enumerable.Range(0, cfg.NumLayers).Select(_ => new float[cfg.InnerSize * (cfg.ConvKernel - 1)]).ToArray();
        var ssmStates = Enumerable.Range(0, cfg.NumLayers).Select(_ => new float[cfg.InnerSize * cfg.StateSize]).ToArray();
        var logits = reference.Forward(ids, convStates, ssmStates);
        double scale = logits.Max(Math.Abs);
        LlamaTests.AssertClose(logits, ort["logits"].Data, 1e-3, 1e-4 * scale, "mamba logits: ORT vs C# reference");
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            LlamaTests.AssertClose(convStates[l], ort[$"present_conv_states.{l}"].Data, 1e-3, 1e-4 * convStates[l].Max(Math.Abs), $"conv state {l}");
            double sscale = ssmStates[l].Max(Math.Abs);
            LlamaTests.AssertClose(ssmStates[l], ort[$"present_ssm_states.{l}"].Data, 1e-3, 1e-4 * sscale, $"ssm state {l}");
        }
    }

    [Fact]
    public void ScanComputesTheSelectiveScanRecurrence()
    {
        var (m, cfg, w) = Tiny();
        using var _ = m;
        const string ms = "/backbone/layers.2/mixer";
        string[] names = [$"{ms}/Softplus_output_0", $"{ms}/act/Mul_output_0", $"{ms}/Split_1_output_1", $"{ms}/Split_1_output_2", $"{ms}/selective_scan/Scan_output_1", "present_ssm_states.2"];
        using var d = new Decoder(m, names);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        var r = d.Run(ids, only: names);
        int L = ids.Length, e = cfg.InnerSize, n = cfg.StateSize;
        var (delta, x, bm, cm) = (r[names[0]].Data, r[names[1]].Data, r[names[2]].Data, r[names[3]].Data);
        var aLog = w.Values("backbone.layers.2.mixer.A_log", [e, n]);
        var dSkip = w.Values("backbone.layers.2.mixer.D", [e]);
        var h = new double[e * n];
        var y = new float[L * e];
        for (int t = 0; t < L; t++)
            for (int ch = 0; ch < e; ch++)
            {
                double acc = 0, dt = delta[t * e + ch], xv = x[t * e + ch];
                for (int s = 0; s < n; s++)
                {
                    h[ch * n + s] = Math.Exp(dt * -Math.Exp(aLog[ch * n + s])) * h[ch * n + s] + dt * bm[t * n + s] * xv;
                    acc += h[ch * n + s] * cm[t * n + s];
                }
                y[t * e + ch] = (float)(acc + dSkip[ch] * xv);
            }
        double scale = y.Max(Math.Abs);
        Assert.Equal([1L, L, e], r[names[4]].Shape);
        LlamaTests.AssertClose(y, r[names[4]].Data, 1e-4, 1e-5 * scale, "Scan y vs the recurrence");
        LlamaTests.AssertClose(h.Select(v => (float)v).ToArray(), r[names[5]].Data, 1e-4, 1e-5 * h.Max(Math.Abs), "final state");
    }

    [Fact]
    public void StepDecodingWithStatesEqualsLongerPrefill()
    {
        var (m, _, _) = Tiny();
        using var __ = m;
        using var d = new Decoder(m);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        int n = ids.Length - 1;
        var full = d.Run(ids);
        var state = d.Run(ids[..(n - 2)]);
        for (int k = n - 2; k <= n; k++) state = d.Run([ids[k]], state);
        double scale = full["logits"].Data.Max(Math.Abs);
        LlamaTests.AssertClose(full["logits"].Data.AsSpan(n * ByteVocab.Size, ByteVocab.Size), state["logits"].Data, 1e-4, 1e-5 * scale, "mamba three steps vs prefill");
        for (int l = 0; l < 4; l++)
        {
            LlamaTests.AssertClose(full[$"present_conv_states.{l}"].Data, state[$"present_conv_states.{l}"].Data, 1e-4, 1e-5 * full[$"present_conv_states.{l}"].Data.Max(Math.Abs), $"conv state {l}");
            LlamaTests.AssertClose(full[$"present_ssm_states.{l}"].Data, state[$"present_ssm_states.{l}"].Data, 1e-4, 1e-5 * full[$"present_ssm_states.{l}"].Data.Max(Math.Abs), $"ssm state {l}");
        }
    }

    [Fact]
    public void MambaHasQuambasOutliers()
    {
        var (m, cfg, _) = Tiny();
        using var _ = m;
        int[] Ints(string key) => m.Metadata.Single(kv => kv.Key == key).Value.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var ssmChannels = Ints("quantc.outliers.ssm_input_channels");
        var massive = Ints("quantc.outliers.out_proj_massive_channels");
        var names = Enumerable.Range(0, cfg.NumLayers).SelectMany(i => new[] { $"/backbone/layers.{i}/mixer/act/Mul_output_0", $"/backbone/layers.{i}/mixer/Mul_1_output_0" }).ToList();
        using var d = new Decoder(m, names);
        var runs = Repo.CalibrationSamples(4, 128).Select(ids => d.Run(ids, only: names)).ToList();
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            var x = runs.SelectMany(r => r[names[2 * i]].Data).ToArray();
            var g = runs.SelectMany(r => r[names[2 * i + 1]].Data).ToArray();
            int e = cfg.InnerSize;
            float[] ChMax(float[] a) { var mx = new float[e]; for (int j = 0; j < a.Length; j++) mx[j % e] = Math.Max(mx[j % e], Math.Abs(a[j])); return mx; }
            var xm = ChMax(x);
            var gm = ChMax(g);
            float xmed = xm.Order().ElementAt(e / 2), gmed = gm.Order().ElementAt(e / 2);
            var xBig = Enumerable.Range(0, e).Where(c => xm[c] >= 20 * xmed).ToArray();
            var gMassive = Enumerable.Range(0, e).Where(c => gm[c] >= 100 * gmed).ToArray();
            // Heavy tails: the kurtosis of x over all its values.
            double mean = x.Average(v => (double)v), var2 = x.Average(v => (v - mean) * (v - mean)), kurt = x.Average(v => Math.Pow(v - mean, 4)) / (var2 * var2);
            output.WriteLine($"layer {i}: scan input x channels ≥ 20× median: {string.Join(", ", xBig.Select(c => $"{c} ({xm[c] / xmed:F0}×)"))}, kurtosis {kurt:F0}; out_proj input channels ≥ 100×: {string.Join(", ", gMassive.Select(c => $"{c} ({gm[c] / gmed:F0}×)"))}");
            Assert.InRange(xBig.Length, 2, ssmChannels.Length);
            Assert.All(xBig, c => Assert.Contains(c, ssmChannels));
            Assert.True(kurt > 30, $"layer {i}: x is not heavy-tailed (kurtosis {kurt:F1})");
            Assert.NotEmpty(gMassive);
            Assert.All(gMassive, c => Assert.Contains(c, massive));
        }
    }
}
