using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using Quantc.Core.Data;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Genai;

/// <summary>
/// The tokenizer files of a GenAI folder: the model's own (<c>tokenizer.json</c> or SentencePiece <c>tokenizer.model</c>, with their
/// <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c> when present) copied from beside the model, or, for the byte-tokenized
/// reference models, a byte-level BPE <c>tokenizer.json</c> of 256 byte tokens and no merges (id = byte value, BOS = 256).
/// </summary>
public sealed class GenaiTokenizer
{
    private static readonly string[] Companions = ["tokenizer_config.json", "special_tokens_map.json"];

    private readonly string? _folder;

    private GenaiTokenizer(string kind, string? folder, IReadOnlyList<string> files, SpecialTokens tokens)
    {
        Kind = kind;
        _folder = folder;
        Files = files;
        Tokens = tokens;
    }

    /// <summary>"byte-level (reference models)", "sentencepiece" or "tokenizer.json".</summary>
    public string Kind { get; }

    /// <summary>The file names this tokenizer writes into the folder.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>BOS, EOS and padding ids.</summary>
    public SpecialTokens Tokens { get; }

    /// <summary>The tokenizer of the model at <paramref name="modelPath"/>: its own files beside it (config.json's special token ids
    /// win over the tokenizer's), else the byte-level one when the model is byte-tokenized.</summary>
    public static GenaiTokenizer For(Model model, string modelPath)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var hf = HfConfig.Read(folder);
        string sp = Path.Combine(folder, "tokenizer.model"), json = Path.Combine(folder, "tokenizer.json");
        var companions = Companions.Where(c => File.Exists(Path.Combine(folder, c))).ToList();
        if (File.Exists(sp))
        {
            SentencePieceTokenizer tok;
            try
            {
                using var s = File.OpenRead(sp);
                tok = SentencePieceTokenizer.Create(s, addBeginningOfSentence: false, addEndOfSentence: false);
            }
            catch (Exception e) when (e is not BadInputException)
            {
                throw new BadInputException($"{sp}: cannot load the SentencePiece model ({e.Message})", e);
            }
            var tokens = new SpecialTokens(hf.Bos ?? tok.BeginningOfSentenceId, hf.Eos ?? [tok.EndOfSentenceId],
                hf.Pad ?? hf.Eos?[0] ?? tok.EndOfSentenceId);
            bool ownConfig = companions.Contains("tokenizer_config.json"), ownJson = File.Exists(json);
            // GenAI reads tokenizer.json only: converted from the SentencePiece model unless the model ships one.
            return new GenaiTokenizer(ownJson ? "sentencepiece (its tokenizer.json)" : "sentencepiece (tokenizer.json converted)", folder,
                ["tokenizer.model", "tokenizer.json", .. companions, .. ownConfig ? [] : new[] { "tokenizer_config.json" }], tokens)
                { _spConfig = !ownConfig, _spJson = ownJson ? null : sp };
        }
        if (File.Exists(json))
        {
            var bos = hf.Bos ?? HfTokenizer.FromTokenizerJson(json).Bos
                ?? throw new BadInputException($"{json}: no BOS token id (no <s>, <|begin_of_text|> or <|endoftext|>, and no config.json)");
            var eos = hf.Eos ?? [bos];
            return new GenaiTokenizer("tokenizer.json", folder, ["tokenizer.json", .. companions],
                new SpecialTokens(bos, eos, hf.Pad ?? eos[0]));
        }
        if (DataLoader.TokenizerFor(model) is not ByteTokenizer)
            throw new BadInputException($"no tokenizer next to {modelPath}: put the model's tokenizer.json or tokenizer.model beside it");
        // The reference models have no end-of-text token: BOS, which starts a document, ends generation too.
        long b = ByteTokenizer.BosId;
        return new GenaiTokenizer("byte-level (reference models)", null, ["tokenizer.json", "tokenizer_config.json"],
            new SpecialTokens(hf.Bos ?? b, hf.Eos ?? [b], hf.Pad ?? b));
    }

    private bool _spConfig;
    private string? _spJson;

    /// <summary>Writes every file of <see cref="Files"/>; <paramref name="pathOf"/> maps a file name to where to write it.</summary>
    public void Write(Func<string, string> pathOf)
    {
        if (_folder is null)
        {
            File.WriteAllText(pathOf("tokenizer.json"), ByteLevelJson().ToJsonString(Indented));
            File.WriteAllText(pathOf("tokenizer_config.json"), new JsonObject
            {
                ["add_bos_token"] = false, ["bos_token"] = "<s>", ["eos_token"] = "<s>", ["model_max_length"] = 1 << 20,
                ["tokenizer_class"] = "GPT2Tokenizer",
            }.ToJsonString(Indented));
            return;
        }
        foreach (var f in Files)
        {
            if (f == "tokenizer.json" && _spJson is not null)
                File.WriteAllText(pathOf(f), SentencePieceJson.Convert(_spJson).ToJsonString(Indented));
            else if (f == "tokenizer_config.json" && _spConfig)
                File.WriteAllText(pathOf(f), new JsonObject
                {
                    ["add_bos_token"] = true, ["add_eos_token"] = false, ["bos_token"] = "<s>", ["eos_token"] = "</s>",
                    ["unk_token"] = "<unk>", ["tokenizer_class"] = "LlamaTokenizer",
                }.ToJsonString(Indented));
            else File.Copy(Path.Combine(_folder, f), pathOf(f), overwrite: true);
        }
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>GPT-2's byte-to-character table: printable Latin-1 bytes are themselves, the others follow from U+0100.</summary>
    internal static char[] ByteChars()
    {
        var chars = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            chars[b] = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF ? (char)b : (char)next++;
        return chars;
    }

    private static JsonObject ByteLevelJson()
    {
        var vocab = new JsonObject();
        var chars = ByteChars();
        for (int b = 0; b < 256; b++) vocab[chars[b].ToString()] = b;
        JsonObject ByteLevel() => new()
        {
            ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false,
        };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = ByteTokenizer.BosId, ["content"] = "<s>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(),
            ["post_processor"] = null,
            ["decoder"] = ByteLevel(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab,
                ["merges"] = new JsonArray(),
            },
        };
    }
}

/// <summary>The parts of a Hugging Face config.json beside the model that GenAI needs (all optional).</summary>
internal sealed record HfConfig(long? Bos, IReadOnlyList<long>? Eos, long? Pad, long? MaxPositions)
{
    public static HfConfig Read(string folder)
    {
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) return new HfConfig(null, null, null, null);
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new BadInputException($"{path}: not valid JSON ({e.Message})", e); }
        long? Int(string key) => root?[key] is JsonValue v && v.TryGetValue<long>(out var x) ? x : null;
        IReadOnlyList<long>? eos = root?["eos_token_id"] switch
        {
            JsonArray a => a.Select(x => x is JsonValue v && v.TryGetValue<long>(out var l) ? l : -1).Where(l => l >= 0).ToList(),
            JsonValue v when v.TryGetValue<long>(out var l) => [l],
            _ => null,
        };
        return new HfConfig(Int("bos_token_id"), eos is { Count: > 0 } ? eos : null, Int("pad_token_id"), Int("max_position_embeddings"));
    }
}
