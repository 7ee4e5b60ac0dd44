using System.Text.Json.Nodes;
using Google.Protobuf;
using Quantc.Onnx;

namespace Quantc.Genai;

/// <summary>
/// A SentencePiece BPE <c>tokenizer.model</c> as the Hugging Face <c>tokenizer.json</c> that ONNX Runtime GenAI's tokenizer reads
/// (it does not read <c>tokenizer.model</c>): the pieces as the BPE vocabulary, merges recovered from the pieces ordered by score
/// (every split of a piece into two pieces of the vocabulary), "▁" for spaces with a dummy prefix, byte fallback as the model
/// says. A Unigram model is refused: its segmentation is not BPE's.
/// </summary>
public static class SentencePieceJson
{
    private sealed record Piece(string Text, float Score, int Type);

    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4;

    public static JsonObject Convert(string path)
    {
        var (pieces, modelType, byteFallback, dummyPrefix) = Read(path);
        if (modelType != 2)
            throw new BadInputException($"{path}: a SentencePiece {(modelType == 1 ? "Unigram" : $"type-{modelType}")} model; only BPE " +
                "models convert to the tokenizer.json GenAI reads (ship the model's tokenizer.json instead)");
        var vocab = new JsonObject();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < pieces.Count; i++)
        {
            ids.TryAdd(pieces[i].Text, i);
            vocab[pieces[i].Text] ??= i;
        }
        // Merges: each piece of more than one character, split every way into two known pieces, by the merged piece's score.
        var merges = new List<(string A, string B, float Score, int Id)>();
        for (int i = 0; i < pieces.Count; i++)
        {
            var p = pieces[i];
            if (p.Type is not Normal and not UserDefined) continue;
            var chars = System.Globalization.StringInfo.ParseCombiningCharacters(p.Text);
            for (int k = 1; k < chars.Length; k++)
            {
                string a = p.Text[..chars[k]], b = p.Text[chars[k]..];
                if (ids.ContainsKey(a) && ids.ContainsKey(b)) merges.Add((a, b, p.Score, i));
            }
        }
        var ordered = merges.OrderByDescending(m => m.Score).ThenBy(m => m.Id).Select(m => (JsonNode?)new JsonArray(m.A, m.B)).ToArray();
        string unk = pieces.FirstOrDefault(p => p.Type == Unknown)?.Text ?? "<unk>";
        var added = new JsonArray(pieces.Select((p, i) => (p, i)).Where(x => x.p.Type is Unknown or Control).Select(x =>
            (JsonNode?)new JsonObject
            {
                ["id"] = x.i, ["content"] = x.p.Text, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            }).ToArray());
        var normalizers = new JsonArray();
        if (dummyPrefix) normalizers.Add(new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" });
        normalizers.Add(new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" });
        var decoders = new JsonArray(
            new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
            new JsonObject { ["type"] = "ByteFallback" },
            new JsonObject { ["type"] = "Fuse" });
        if (dummyPrefix) decoders.Add(new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 });
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = normalizers },
            ["pre_tokenizer"] = null,
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = decoders },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = unk, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = true, ["byte_fallback"] = byteFallback, ["vocab"] = vocab,
                ["merges"] = new JsonArray(ordered),
            },
        };
    }

    /// <summary>ModelProto: pieces (1: piece, 2: score, 3: type), trainer_spec (2; 3: model_type, 35: byte_fallback),
    /// normalizer_spec (3; 3: add_dummy_prefix, default true).</summary>
    private static (List<Piece> Pieces, int ModelType, bool ByteFallback, bool DummyPrefix) Read(string path)
    {
        var pieces = new List<Piece>();
        int modelType = 1;
        bool byteFallback = false, dummyPrefix = true;
        try
        {
            var input = new CodedInputStream(File.ReadAllBytes(path));
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int field = WireFormat.GetTagFieldNumber(tag);
                if (field is 1 or 2 or 3 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                {
                    var sub = new CodedInputStream(input.ReadBytes().ToByteArray());
                    string text = "";
                    float score = 0;
                    int type = Normal;
                    uint t;
                    while ((t = sub.ReadTag()) != 0)
                    {
                        int f = WireFormat.GetTagFieldNumber(t);
                        if (field == 1 && f == 1) text = sub.ReadString();
                        else if (field == 1 && f == 2) score = sub.ReadFloat();
                        else if (field == 1 && f == 3) type = sub.ReadInt32();
                        else if (field == 2 && f == 3) modelType = sub.ReadInt32();
                        else if (field == 2 && f == 35) byteFallback = sub.ReadBool();
                        else if (field == 3 && f == 3) dummyPrefix = sub.ReadBool();
                        else sub.SkipLastField();
                    }
                    if (field == 1) pieces.Add(new Piece(text, score, type));
                }
                else input.SkipLastField();
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new BadInputException($"{path}: not a SentencePiece model ({e.Message})", e);
        }
        if (pieces.Count == 0) throw new BadInputException($"{path}: a SentencePiece model without pieces");
        return (pieces, modelType, byteFallback, dummyPrefix);
    }
}
