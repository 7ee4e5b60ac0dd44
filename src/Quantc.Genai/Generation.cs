using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntimeGenAI;
using Quantc.Onnx;

namespace Quantc.Genai;

/// <summary>Search settings of one generation. Greedy unless <see cref="Temperature"/> &gt; 0 (then sampled, with top-k / top-p).
/// </summary>
public sealed record GenerateOptions
{
    public int MaxTokens { get; init; } = 64;
    public double Temperature { get; init; }
    public int TopK { get; init; }
    public double TopP { get; init; } = 1.0;
    public int? Seed { get; init; }
}

/// <summary>The tokens of one generation (prompt ids, then generated ids) and its timings.</summary>
/// <see cref="StoppedAtEos"/>: generation ended on an end-of-sequence token (which GenAI does not append to the sequence).
public sealed record GenerateResult(IReadOnlyList<int> Prompt, IReadOnlyList<int> Generated, TimeSpan Prefill, TimeSpan Decode,
    bool StoppedAtEos)
{
    /// <summary>Prompt tokens per second of the first step (the prompt through the model, and the first new token).</summary>
    public double PrefillTokensPerSecond => Prompt.Count / Math.Max(Prefill.TotalSeconds, 1e-9);

    /// <summary>Decode steps: one model run per token after the first (the one that produced EOS included).</summary>
    public int DecodeSteps => Math.Max(Generated.Count - 1, 0) + (StoppedAtEos && Generated.Count > 0 ? 1 : 0);

    /// <summary>Decode steps per second.</summary>
    public double DecodeTokensPerSecond => DecodeSteps / Math.Max(Decode.TotalSeconds, 1e-9);
}

/// <summary>A GenAI folder opened with ONNX Runtime GenAI (CPU): tokenize, generate token by token, decode.</summary>
public sealed class GenaiModel : IDisposable
{
    private readonly Model _model;
    private readonly Tokenizer _tokenizer;

    /// <summary>Opens <paramref name="folder"/> (genai_config.json, model, tokenizer) on the CPU.</summary>
    public GenaiModel(string folder)
    {
        if (!File.Exists(Path.Combine(folder, GenaiFolder.ConfigFile)))
            throw new BadInputException($"{folder}: no {GenaiFolder.ConfigFile} (write one with 'quantc compile --genai')");
        Folder = folder;
        try
        {
            using var config = new Config(folder);
            config.ClearProviders();
            _model = new Model(config);
            _tokenizer = new Tokenizer(_model);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            _model?.Dispose();
            throw new BadInputException($"{folder}: ONNX Runtime GenAI cannot open it: {e.Message}", e);
        }
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, GenaiFolder.ConfigFile)));
        var m = doc.RootElement.GetProperty("model");
        Bos = m.GetProperty("bos_token_id").GetInt32();
        ContextLength = m.GetProperty("context_length").GetInt32();
        // A model compiled with prefix_tokens keeps BOS first in its KV-cache prefix: its prompts go in without one.
        string modelFile = Path.Combine(folder, m.GetProperty("decoder").GetProperty("filename").GetString() ?? GenaiFolder.ModelFile);
        PrefixHasBos = File.Exists(modelFile) && Quantc.Onnx.OnnxMetadata.Read(modelFile)
            .Any(kv => kv.Key == DecoderShape.PrefixTokensKey && kv.Value.Split(',')[0] == Bos.ToString(CultureInfo.InvariantCulture));
        _unknown = UnknownId(Path.Combine(folder, "tokenizer.json"));
    }

    private readonly int? _unknown;

    /// <summary>The id of tokenizer.json's unk_token, if it has one.</summary>
    private static int? UnknownId(string path)
    {
        if (!File.Exists(path)) return null;
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.TryGetProperty("model", out var model) && model.TryGetProperty("unk_token", out var unk)
            && unk.ValueKind == System.Text.Json.JsonValueKind.String && model.TryGetProperty("vocab", out var vocab)
            && vocab.ValueKind == System.Text.Json.JsonValueKind.Object && vocab.TryGetProperty(unk.GetString()!, out var id)
            ? id.GetInt32() : null;
    }

    public string Folder { get; }
    public int Bos { get; }
    public int ContextLength { get; }

    /// <summary>Whether the model keeps BOS first in a KV-cache prefix (prefix_tokens): then <see cref="Encode"/> leaves it out.</summary>
    public bool PrefixHasBos { get; }

    /// <summary>The prompt's token ids (characters outside the vocabulary as the unknown token), starting with BOS (added when the
    /// tokenizer does not add it), as the models were trained — without it where the model's prefix carries it
    /// (<see cref="PrefixHasBos"/>: a second one would change what the model computes).</summary>
    public int[] Encode(string prompt)
    {
        using var seqs = _tokenizer.Encode(prompt);
        var ids = seqs[0].ToArray();
        // GenAI's tokenizer gives -1 for a character outside a SentencePiece vocabulary; SentencePiece itself gives <unk>.
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] < 0)
                ids[i] = _unknown ?? throw new BadInputException("the prompt has characters outside the tokenizer's vocabulary and the " +
                    "tokenizer has no unknown token");
        if (PrefixHasBos) return ids.Length > 0 && ids[0] == Bos ? ids[1..] : ids;
        return ids.Length > 0 && ids[0] == Bos ? ids : [Bos, .. ids];
    }

    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids.Where(i => i != Bos).ToArray());

    /// <summary>Generates from <paramref name="prompt"/> (ids); <paramref name="onText"/> receives each new token's text as it
    /// comes.</summary>
    public GenerateResult Generate(IReadOnlyList<int> prompt, GenerateOptions options, Action<string>? onText = null)
    {
        if (prompt.Count == 0) throw new BadInputException("the prompt has no tokens");
        int maxLength = Math.Min(ContextLength, prompt.Count + options.MaxTokens);
        if (prompt.Count >= maxLength)
            throw new BadInputException($"the prompt has {prompt.Count} tokens: no room left in the context of {ContextLength}");
        using var p = new GeneratorParams(_model);
        p.SetSearchOption("max_length", maxLength);
        bool sample = options.Temperature > 0;
        p.SetSearchOption("do_sample", sample);
        if (sample)
        {
            p.SetSearchOption("temperature", options.Temperature);
            p.SetSearchOption("top_k", options.TopK);
            p.SetSearchOption("top_p", options.TopP);
        }
        if (options.Seed is { } seed) p.SetSearchOption("random_seed", seed);
        using var generator = new Generator(_model, p);
        using var stream = _tokenizer.CreateStream();
        var generated = new List<int>();
        var clock = Stopwatch.StartNew();
        generator.AppendTokens(prompt.ToArray());
        TimeSpan prefill = TimeSpan.Zero;
        bool eos = false;
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            var seq = generator.GetSequence(0);
            if (generated.Count == 0) { prefill = clock.Elapsed; clock.Restart(); }
            // An end-of-sequence token finishes the sequence without being appended to it.
            if (seq.Length == prompt.Count + generated.Count) { eos = true; break; }
            int token = seq[^1];
            generated.Add(token);
            onText?.Invoke(token == Bos ? "" : stream.Decode(token));
        }
        return new GenerateResult(prompt.ToList(), generated, prefill, clock.Elapsed, eos);
    }

    public void Dispose()
    {
        _tokenizer.Dispose();
        _model.Dispose();
    }
}
