using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// The trained LLaMA of ../shared/real (babyllama-tok105, beside the repository: see its README) as a regression
/// check: loaded through the safetensors loader with its SentencePiece tokenizer, its fp32 perplexity on a fixed slice
/// of TinyStories is what it was measured to be (a loader, tokenizer or data regression moves it), and a compile keeps
/// its predictions.
/// </summary>
public sealed class RealModelTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-real");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>../shared/real beside the repository root (see <see cref="Quantc.Tests.Shared.RealModels"/>).</summary>
    internal static string RealDir() => Quantc.Tests.Shared.RealModels.Dir();

    /// <summary>The trained LLaMA built from its checkpoint, with tokenizer.model next to it.</summary>
    private Model Load(string real)
    {
        string src = Path.Combine(real, "babyllama-tok105");
        string path = Path.Combine(_dir.FullName, "babyllama.onnx");
        if (!File.Exists(path))
        {
            ReferenceModels.BuildAndSaveFromCheckpoint("llama", Path.Combine(src, "config.json"), Path.Combine(src, "model.safetensors"), "torch", path);
            File.Copy(Path.Combine(src, "tokenizer.model"), Path.Combine(_dir.FullName, "tokenizer.model"));
        }
        return Model.Load(path);
    }

    /// <summary>Characters [from, from + length) of tinystories-valid.txt (from &lt; 0: from the end) written to a file.</summary>
    private string Slice(string real, int from, int length, string name)
    {
        string text = File.ReadAllText(Path.Combine(real, "text", "tinystories-valid.txt"));
        int start = from < 0 ? text.Length + from : from;
        string path = Path.Combine(_dir.FullName, name);
        File.WriteAllText(path, text.Substring(start, Math.Min(length, text.Length - start)));
        return path;
    }

    private static LoadedData Data(Model m, string path, int samples) => DataLoader.Load(m, path, new DataOptions { SequenceLength = 128, MaxSamples = samples });

    /// <summary>fp32 perplexity on the last 6,000 characters of TinyStories, document-aligned (measured 2.8083 over 5,953 scored tokens in 59 samples).</summary>
    [Fact]
    public void TrainedLlamaHasItsPerplexityOnTinyStories()
    {
        string real = RealDir();
        using var m = Load(real);
        var data = Data(m, Slice(real, -6000, 6000, "eval.txt"), 64);
        var r = Verifier.Run(m, m, data.Samples, data.Tokens, new VerifyOptions { PerLayer = false });
        log.WriteLine($"{data.Description}: perplexity {r.Logits!.OriginalPerplexity:0.0000} over {r.Logits.ScoredTokens} tokens");
        Assert.InRange(r.Logits.OriginalPerplexity, 2.8083 * 0.995, 2.8083 * 1.005);
        Assert.Equal(1.0, r.Logits.Top1Agreement);
        Assert.Equal(new GreedyMatch(data.Tokens![0][0], 64, 64), r.Greedy);
    }

    /// <summary>
    /// Greedy decoding from BOS with the KV cache (one token per step, the cache the model returned fed back) yields the
    /// same tokens as evaluating the whole prefix: the logits at every position of one full run pick the next token.
    /// </summary>
    [Fact]
    public void GreedyDecodingWithTheCacheMatchesFullPrefixEvaluation()
    {
        string real = RealDir();
        using var m = Load(real);
        long bos = DataLoader.TokenizerFor(m).Bos ?? throw new InvalidOperationException("the tokenizer has no BOS");
        const int steps = 48, vocab = 105, kvHeads = 4, headDim = 16;
        using var session = Quantc.Core.Runtime.OrtModel.CreateSession(m);
        var tokens = new List<long> { bos };
        var out0 = OrtRuns.Outputs(session, Quantc.Core.Calibration.CalibrationInputs.FromTokens(m.Graph, tokens.ToArray()));
        for (int t = 1; t <= steps; t++)
        {
            tokens.Add(ArgMax(out0["logits"].AsSpan(out0["logits"].Length - vocab, vocab)));
            if (t == steps) break;
            var step = new Quantc.Core.Calibration.CalibrationSample();
            step.Inputs["input_ids"] = (new[] { tokens[^1] }, [1, 1]);
            step.Inputs["attention_mask"] = (Enumerable.Repeat(1L, t + 1).ToArray(), [1, t + 1]);
            step.Inputs["position_ids"] = (new[] { (long)t }, [1, 1]);
            foreach (var (name, data) in out0.Where(kv => kv.Key.StartsWith("present.", StringComparison.Ordinal)))
                step.Inputs["past_key_values." + name["present.".Length..]] = (data, [1, kvHeads, t, headDim]);
            out0 = OrtRuns.Outputs(session, step);
        }
        var full = OrtRuns.Outputs(session, Quantc.Core.Calibration.CalibrationInputs.FromTokens(m.Graph, tokens.ToArray()))["logits"];
        log.WriteLine($"greedy from BOS: {string.Join(" ", tokens)}");
        for (int i = 0; i < steps; i++)
            Assert.True(ArgMax(full.AsSpan(i * vocab, vocab)) == tokens[i + 1], $"position {i}: full-prefix evaluation picks another token than cached decoding");
    }

    private static string CpuDescription => Quantc.Core.Runtime.CpuFeatures.Description;

    private static long ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /// <summary>w8a8-dynamic calibrated on the first part of TinyStories keeps the trained model's predictions on the last part.</summary>
    [Fact]
    public void W8A8DynamicKeepsTheTrainedLlamasPredictions()
    {
        string real = RealDir();
        using var original = Load(real);
        using var m = Load(real);
        var calib = Data(m, Slice(real, 0, 20000, "calib.txt"), 16);
        TestCompiler.Compile(m, "w8a8-dynamic", calib.Samples);
        var eval = Data(original, Slice(real, -6000, 6000, "eval.txt"), 64);
        var r = Verifier.Run(original, m, eval.Samples, eval.Tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"w8a8-dynamic: logits SQNR {sqnr:0.0} dB, top-1 {r.Logits!.Top1Agreement:P1}, perplexity {r.Logits.OriginalPerplexity:0.000} → {r.Logits.CompiledPerplexity:0.000}");
        // ONNX Runtime's U8S8 kernel on a CPU without VNNI sums u8·s8 pairs in saturating int16 (vpmaddubsw): measured 94.5 %
        // top-1 and 25.2 dB logits SQNR on an AVX2-only EPYC (2026-12-05) against > 96 % and > 30 dB with VNNI, for the same
        // compiled bytes.
        bool vnni = Quantc.Core.Runtime.CpuFeatures.HasInt8DotProduct;
        double top1 = vnni ? 0.96 : 0.93, minSqnr = vnni ? 30 : 22;
        Assert.True(r.Logits.Top1Agreement > top1, $"top-1 agreement {r.Logits.Top1Agreement:P1} ≤ {top1:P0} ({CpuDescription})");
        Assert.True(sqnr > minSqnr, $"logits SQNR {sqnr:0.0} dB ≤ {minSqnr} dB ({CpuDescription})");
        Assert.True(r.Logits.CompiledPerplexity < r.Logits.OriginalPerplexity * 1.02, "perplexity rose by more than 2 %");
        // Greedy decoding from BOS through the KV cache: all 64 tokens matched fp32 when measured.
        Assert.True(r.Greedy is { Steps: 64, Matching: >= 32 }, $"greedy decoding: {r.Greedy}");
    }
    /// <summary>
    /// Issue 15 defect 6: on the trained model the power-of-two factors of smooth's α search leave almost no smoothing (one
    /// octave), so auto also searches exact factors and uses them where they lower the sampled W8A8 output error by 5 % or
    /// more (measured: 9 of 10 groups, error 10–16 % lower); the chosen α is in each layer's transforms.
    /// </summary>
    [Fact]
    public void SmoothSearchesExactFactorsWhenPowersOfTwoLeaveNoSmoothing()
    {
        string real = RealDir();
        using var m = Load(real);
        var calib = Data(m, Slice(real, 0, 20000, "calib.txt"), 8);
        var ctx = TestCompiler.Compile(m, "smoothquant-auto", calib.Samples).Context;
        var decisions = ctx.Log.Where(l => l.Contains("power-of-two factors span one octave", StringComparison.Ordinal)).ToList();
        foreach (var d in decisions) log.WriteLine(d);
        Assert.NotEmpty(decisions);
        Assert.Contains(decisions, d => d.EndsWith("→ exact factors", StringComparison.Ordinal));
        var transforms = ctx.Plan.Layers.SelectMany(p => p.Transforms).Where(t => t.StartsWith("smoothed α=", StringComparison.Ordinal)).ToList();
        Assert.Contains(transforms, t => t.Contains("(searched), exact factors", StringComparison.Ordinal));
    }
}
