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
        string Meta(string key) => m.Metadata.Single(kv => kv.Key == key).Value;
        int[] Ints(string v) => v.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var ssmChannels = Meta("quantc.outliers.ssm_input_channels").Split(';').Select(Ints).ToArray();
        var massive = Ints(Meta("quantc.outliers.out_proj_massive_channels"));
        long trigger = Ints(Meta("quantc.outliers.trigger_tokens")).Single();
        var names = Enumerable.Range(0, cfg.NumLayers).SelectMany(i => new[] { $"/backbone/layers.{i}/mixer/act/Mul_output_0", $"/backbone/layers.{i}/mixer/Mul_1_output_0" }).ToList();
        using var d = new Decoder(m, names);
        var samples = Repo.CalibrationSamples(4, 128).ToList();
        var runs = samples.Select(ids => d.Run(ids, only: names)).ToList();
        var tokens = samples.SelectMany(ids => ids).ToArray();
        Assert.Contains(trigger, tokens);
        Assert.Equal(cfg.NumLayers, ssmChannels.Length);
        int e = cfg.InnerSize;
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            var x = runs.SelectMany(r => r[names[2 * i]].Data).ToArray();
            var g = runs.SelectMany(r => r[names[2 * i + 1]].Data).ToArray();
            float[] ChMax(float[] a) { var mx = new float[e]; for (int j = 0; j < a.Length; j++) mx[j % e] = Math.Max(mx[j % e], Math.Abs(a[j])); return mx; }
            var gm = ChMax(g);
            float gmed = gm.Order().ElementAt(e / 2);
            var gMassive = Enumerable.Range(0, e).Where(c => gm[c] >= 100 * gmed).ToArray();
            // Token-sparse tails: the 99.999th percentile of |x| lies far below its max, the values above
            // it sit on trigger tokens in the layer's spiking channels, and the kurtosis is high.
            var abs = x.Select(Math.Abs).Order().ToArray();
            float p = abs[(int)Math.Ceiling(0.99999 * abs.Length) - 1], max = abs[^1], p999 = abs[(int)Math.Ceiling(0.999 * abs.Length) - 1];
            var spikes = Enumerable.Range(0, x.Length).Where(j => Math.Abs(x[j]) > 4 * p999).ToArray();
            double mean = x.Average(v => (double)v), var2 = x.Average(v => (v - mean) * (v - mean)), kurt = x.Average(v => Math.Pow(v - mean, 4)) / (var2 * var2);
            output.WriteLine($"layer {i}: scan input x max {max:G4}, p99.999 {p:G4} (max/p {max / p:F1}), p99.9 {p999:G4}, {spikes.Length} values > 4·p99.9, kurtosis {kurt:F0}; out_proj input channels ≥ 100× median: {string.Join(", ", gMassive.Select(c => $"{c} ({gm[c] / gmed:F0}×)"))}");
            Assert.True(max / p >= 10, $"layer {i}: max|x| / p99.999 = {max / p:F2}: the tail is not token-sparse");
            Assert.True(kurt > 30, $"layer {i}: x is not heavy-tailed (kurtosis {kurt:F1})");
            Assert.NotEmpty(spikes);
            Assert.All(spikes, j => { Assert.Equal(trigger, tokens[j / e]); Assert.Contains(j % e, ssmChannels[i]); });
            Assert.NotEmpty(gMassive);
            Assert.All(gMassive, c => Assert.Contains(c, massive));
        }
    }
}
