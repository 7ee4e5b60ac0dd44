using System.Globalization;
using Quantc.Ir;
using Xunit.Abstractions;

namespace Quantc.Models.Tests;

/// <summary>Locates the repository's files.</summary>
internal static class Repo
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "Compiler.sln"))) return d.FullName;
        throw new InvalidOperationException("repository root (Compiler.sln) not found");
    }

    public static string Path(string rel) => System.IO.Path.Combine(Root, rel);

    /// <summary>Samples of the calibration text as the data loader makes them: BOS + <paramref name="length"/>−1 bytes.</summary>
    public static List<long[]> CalibrationSamples(int count, int length)
    {
        var bytes = File.ReadAllBytes(Path("models/calib.txt"));
        var result = new List<long[]>();
        for (int s = 0; s < count; s++)
            result.Add([ByteVocab.Bos, .. bytes.AsSpan(s * (length - 1), length - 1).ToArray().Select(b => (long)b)]);
        return result;
    }
}

/// <summary>
/// Measures, from real ONNX Runtime runs on the bundled calibration text, the outlier structure
/// that models/README.md promises, so that it cannot silently disappear.
/// </summary>
public class OutlierStructureTests(ITestOutputHelper output)
{
    private static int[] Ints(Model m, string key) =>
        m.Metadata.Single(kv => kv.Key == key).Value.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();

    private static float Median(IEnumerable<float> xs)
    {
        var a = xs.ToArray();
        Array.Sort(a);
        return a[a.Length / 2];
    }

    /// <summary>Per-channel max |x| over all tokens of all samples.</summary>
    private static float[] ChannelAbsMax(IEnumerable<Arr> runs)
    {
        float[]? mx = null;
        foreach (var a in runs)
        {
            int c = (int)a.Dim(-1);
            mx ??= new float[c];
            for (int i = 0; i < a.Data.Length; i++) mx[i % c] = Math.Max(mx[i % c], Math.Abs(a.Data[i]));
        }
        return mx!;
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("small")]
    public void LlamaOutliersAreThereOnTheCalibrationText(string size)
    {
        using var m = ReferenceModels.Build("llama", size, 0, "torch");
        var cfg = LlamaConfig.ForSize(size);
        int layers = cfg.NumLayers;
        int[] massiveLayers = Ints(m, "quantc.outliers.massive_layers");
        int[] massiveChannels = Ints(m, "quantc.outliers.massive_channels");
        int[] outlierChannels = Ints(m, "quantc.outliers.channels");
        int[] triggers = Ints(m, "quantc.outliers.trigger_tokens");
        var names = new List<string>();
        for (int i = 0; i < layers; i++)
            names.AddRange([$"/model/layers.{i}/Add_1_output_0", $"/model/layers.{i}/mlp/Mul_output_0",
                $"/model/layers.{i}/input_layernorm/Mul_1_output_0", $"/model/layers.{i}/post_attention_layernorm/Mul_1_output_0"]);
        using var d = new Decoder(m, names);
        var samples = Repo.CalibrationSamples(size == "tiny" ? 6 : 2, 128);
        var runs = samples.Select(ids => d.Run(ids, only: names)).ToList();

        // Massive activations: after the massive layer, the trigger tokens (BOS, '\n') carry a couple of
        // residual channels at 100×–1000× the median magnitude; the cancel layer removes them again.
        int lm = massiveLayers[0];
        float medianResidual = Median(runs.SelectMany(r => r[$"/model/layers.{lm}/Add_1_output_0"].Data).Select(Math.Abs));
        float massive = 0, elsewhere = 0;
        for (int s = 0; s < samples.Count; s++)
        {
            var res = runs[s][$"/model/layers.{lm}/Add_1_output_0"];
            for (int t = 0; t < samples[s].Length; t++)
            {
                bool trig = triggers.Contains((int)samples[s][t]);
                foreach (int ch in massiveChannels)
                {
                    float v = Math.Abs(res.Data[t * cfg.HiddenSize + ch]);
                    if (trig) massive = Math.Max(massive, v); else elsewhere = Math.Max(elsewhere, v);
                }
            }
        }
        double massiveRatio = massive / medianResidual;
        output.WriteLine($"{size}: massive activation after layer {lm}: {massive:F1} = {massiveRatio:F0}× the median |residual| ({medianResidual:F3}); non-trigger tokens in those channels ≤ {elsewhere:F2}");
        Assert.InRange(massiveRatio, 100, 1000);
        Assert.True(elsewhere < massive / 50, "the massive channels must be massive only for trigger tokens");
        if (massiveLayers.Length > 1)
        {
            int lc = massiveLayers[1];
            float afterCancel = 0;
            foreach (var r in runs)
            {
                var res = r[$"/model/layers.{lc}/Add_1_output_0"];
                for (int i = 0; i < res.Data.Length; i++)
                    if (massiveChannels.Contains(i % cfg.HiddenSize)) afterCancel = Math.Max(afterCancel, Math.Abs(res.Data[i]));
            }
            output.WriteLine($"{size}: after the cancel layer {lc} the massive channels are ≤ {afterCancel:F1} ({afterCancel / medianResidual:F0}× median)");
            Assert.True(afterCancel < 0.1 * massive, $"massive activations survive the cancel layer: {afterCancel} of {massive}");
        }

        // Spikes in the down_proj inputs of the massive layers only.
        var spike = new double[layers];
        for (int i = 0; i < layers; i++)
        {
            var all = runs.SelectMany(r => r[$"/model/layers.{i}/mlp/Mul_output_0"].Data).Select(Math.Abs).ToArray();
            spike[i] = all.Max() / Median(all);
        }
        output.WriteLine($"{size}: down_proj input max/median per layer: {string.Join(", ", spike.Select((x, i) => $"{i}:{x:F0}"))}");
        double quietMax = spike.Where((_, i) => !massiveLayers.Contains(i)).Max();
        foreach (int l in massiveLayers) Assert.True(spike[l] >= 1000 && spike[l] >= 10 * quietMax, $"down_proj input of layer {l}: {spike[l]:F0}× (quiet layers up to {quietMax:F0}×)");

        // Channel outliers in the inputs of q/k/v and gate/up: a few channels ≥ 20× the median channel.
        for (int i = 0; i < layers; i++)
            foreach (var (what, name) in new[] { ("q/k/v", $"/model/layers.{i}/input_layernorm/Mul_1_output_0"), ("gate/up", $"/model/layers.{i}/post_attention_layernorm/Mul_1_output_0") })
            {
                var mx = ChannelAbsMax(runs.Select(r => r[name]));
                float med = Median(mx);
                var ratios = mx.Select(x => x / med).ToArray();
                var big = Enumerable.Range(0, ratios.Length).Where(c => ratios[c] >= 20).ToArray();
                if (i == 0 || i == layers - 1)
                    output.WriteLine($"{size}: layer {i} {what} input: channels ≥ 20× median: {string.Join(", ", big.Select(c => $"{c} ({ratios[c]:F0}×)"))}; max {ratios.Max():F0}×");
                Assert.True(ratios.Max() >= 20, $"layer {i} {what}: largest channel only {ratios.Max():F1}× the median");
                Assert.InRange(big.Length, 2, outlierChannels.Length);
                Assert.All(big, c => Assert.Contains(c, outlierChannels));
            }
    }
}
