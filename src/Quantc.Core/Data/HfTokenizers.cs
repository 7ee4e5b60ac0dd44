using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using Quantc.Onnx;

namespace Quantc.Core.Data;

/// <summary>
/// Tokenizers shipped next to a Hugging Face model: <c>tokenizer.model</c> (SentencePiece, as
/// LLaMA-2 and Mistral ship it) or <c>tokenizer.json</c> with a byte-level BPE model (GPT-2 style, as
/// LLaMA-3, Qwen and OPT ship it), through Microsoft.ML.Tokenizers.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    private readonly Tokenizer _tokenizer;

    private HfTokenizer(Tokenizer tokenizer, string name, long? bos)
    {
        _tokenizer = tokenizer;
        Name = name;
        Bos = bos;
    }

    public string Name { get; }
    public long? Bos { get; }
    public long[] Encode(string text) => _tokenizer.EncodeToIds(text).Select(i => (long)i).ToArray();

    /// <summary>The tokenizer in <paramref name="folder"/>, or null when it holds none.</summary>
    public static HfTokenizer? FromFolder(string folder)
    {
        string sp = Path.Combine(folder, "tokenizer.model");
        string json = Path.Combine(folder, "tokenizer.json");
        if (File.Exists(sp))
        {
            try
            {
                using var s = File.OpenRead(sp);
                var tok = SentencePieceTokenizer.Create(s, addBeginningOfSentence: false, addEndOfSentence: false);
                return new HfTokenizer(tok, "sentencepiece", tok.BeginningOfSentenceId);
            }
            catch (Exception e) when (e is not BadInputException)
            {
                throw new BadInputException($"{sp}: cannot load the SentencePiece model ({e.Message})", e);
            }
        }
        return File.Exists(json) ? FromTokenizerJson(json) : null;
    }

    /// <summary>A byte-level BPE tokenizer from a Hugging Face tokenizer.json.</summary>
    public static HfTokenizer FromTokenizerJson(string path)
    {
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new BadInputException($"{path}: not valid JSON ({e.Message})", e); }
        var model = root["model"] ?? throw new BadInputException($"{path}: no \"model\" section");
        if ((string?)model["type"] != "BPE")
            throw new BadInputException($"{path}: tokenizer model type '{(string?)model["type"]}' is not supported (byte-level BPE is; " +
                $"or ship tokenizer.model)");
        bool byteLevel = ContainsType(root["pre_tokenizer"], "ByteLevel") || ContainsType(root["decoder"], "ByteLevel");
        if (!byteLevel)
            throw new BadInputException($"{path}: only byte-level BPE tokenizer.json is supported (for SentencePiece models, ship " +
                $"tokenizer.model)");
        var vocab = model["vocab"]?.AsObject() ?? throw new BadInputException($"{path}: no vocabulary");
        var merges = model["merges"]?.AsArray() ?? throw new BadInputException($"{path}: no merges");
        var mergeText = new StringBuilder("#version: 0.2\n");
        foreach (var m in merges)
        {
            if (m is JsonArray pair && pair.Count == 2)
                mergeText.Append((string?)pair[0]).Append(' ').Append((string?)pair[1]).Append('\n');
            else mergeText.Append((string?)m).Append('\n');
        }
        long? bos = null;
        var fullVocab = (JsonObject)vocab.DeepClone();
        foreach (var t in root["added_tokens"]?.AsArray() ?? [])
        {
            string? content = (string?)t?["content"];
            if (content is null) continue;
            if (content is "<|begin_of_text|>" or "<s>" or "<|endoftext|>" && bos is null) bos = (long?)t!["id"];
            fullVocab[content] ??= (long?)t!["id"];
        }
        // Microsoft.ML.Tokenizers' GPT-2-style tokenizer needs "<|endoftext|>" as its unknown token;
        // byte-level BPE never emits it, so a model without one gets it at an id past the vocabulary.
        if (!fullVocab.ContainsKey("<|endoftext|>"))
            fullVocab["<|endoftext|>"] = fullVocab.Select(kv => (long?)kv.Value ?? 0).DefaultIfEmpty(0).Max() + 1;
        bool addPrefixSpace = (bool?)FindByType(root["pre_tokenizer"], "ByteLevel")?["add_prefix_space"] ?? false;
        using var vs = new MemoryStream(Encoding.UTF8.GetBytes(fullVocab.ToJsonString()));
        using var ms = new MemoryStream(Encoding.UTF8.GetBytes(mergeText.ToString()));
        var tok = CodeGenTokenizer.Create(vs, ms, addPrefixSpace, addBeginOfSentence: false, addEndOfSentence: false);
        return new HfTokenizer(tok, "byte-level BPE", bos);
    }

    private static bool ContainsType(JsonNode? n, string type) => FindByType(n, type) is not null;

    private static JsonNode? FindByType(JsonNode? n, string type)
    {
        if (n is null) return null;
        if (n is JsonObject o)
        {
            if ((string?)o["type"] == type) return o;
            foreach (var kv in o) if (FindByType(kv.Value, type) is { } f) return f;
        }
        if (n is JsonArray a) foreach (var x in a) if (FindByType(x, type) is { } f) return f;
        return null;
    }
}
