using System.Text.Json.Nodes;
using Quantc.Core.Data;
using Quantc.Onnx;

namespace Quantc.Core.Tests;

public sealed class TokenizerTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-tok");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>GPT-2's byte → printable character map.</summary>
    private static Dictionary<int, char> ByteChars()
    {
        var keep = Enumerable.Range(33, 94).Concat(Enumerable.Range(161, 12)).Concat(Enumerable.Range(174, 82)).ToHashSet();
        var map = new Dictionary<int, char>();
        int extra = 0;
        for (int b = 0; b < 256; b++) map[b] = keep.Contains(b) ? (char)b : (char)(256 + extra++);
        return map;
    }

    [Fact]
    public void ByteLevelBpeFromTokenizerJson()
    {
        var chars = ByteChars();
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[chars[b].ToString()] = b;
        vocab["he"] = 256;
        vocab["ll"] = 257;
        vocab[chars[' '] + "w"] = 258;
        var json = new JsonObject
        {
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray("h e", "l l", chars[' '] + " w") },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false },
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 259, ["content"] = "<|begin_of_text|>" }),
        };
        File.WriteAllText(Path.Combine(_dir.FullName, "tokenizer.json"), json.ToJsonString());
        var tok = HfTokenizer.FromFolder(_dir.FullName)!;
        Assert.Equal(new long[] { 256, 257, 'o', 258, 'o', 'r', 'l', 'd' }, tok.Encode("hello world"));
        Assert.Equal(259, tok.Bos);
    }

    [Fact]
    public void UnsupportedTokenizersAreClearErrors()
    {
        File.WriteAllText(Path.Combine(_dir.FullName, "tokenizer.json"), """{"model":{"type":"WordPiece","vocab":{}}}""");
        Assert.Throws<BadInputException>(() => HfTokenizer.FromFolder(_dir.FullName));
        File.WriteAllText(Path.Combine(_dir.FullName, "tokenizer.json"), "{ nope");
        Assert.Throws<BadInputException>(() => HfTokenizer.FromFolder(_dir.FullName));
        Assert.Null(HfTokenizer.FromFolder(Path.Combine(_dir.FullName, "..", "does-not-exist-" + Guid.NewGuid())));
    }

    [Fact]
    public void ByteTokenizerRoundTrips()
    {
        var t = new ByteTokenizer();
        var ids = t.Encode("héllo");
        Assert.Equal(6, ids.Length); // é is two UTF-8 bytes
        Assert.Equal("héllo", ByteTokenizer.Decode(ids));
        Assert.Equal(256, t.Bos);
    }
}

public sealed class SentencePieceTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-sp");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>Writes a minimal SentencePiece BPE model (sentencepiece_model.proto: pieces = 1, trainer_spec = 2, normalizer_spec = 3).</summary>
    private string WriteModel()
    {
        string[] pieces = ["<unk>", "<s>", "</s>", "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁w", "hell", "hello"];
        using var ms = new MemoryStream();
        var o = new Google.Protobuf.CodedOutputStream(ms);
        for (int i = 0; i < pieces.Length; i++)
        {
            using var pm = new MemoryStream();
            var po = new Google.Protobuf.CodedOutputStream(pm);
            po.WriteTag(1, Google.Protobuf.WireFormat.WireType.LengthDelimited); po.WriteString(pieces[i]);
            po.WriteTag(2, Google.Protobuf.WireFormat.WireType.Fixed32); po.WriteFloat(i < 3 ? 0 : -i);
            po.WriteTag(3, Google.Protobuf.WireFormat.WireType.Varint); po.WriteEnum(i == 0 ? 2 : i < 3 ? 3 : 1); // UNKNOWN, CONTROL, NORMAL
            po.Flush();
            o.WriteTag(1, Google.Protobuf.WireFormat.WireType.LengthDelimited); o.WriteBytes(Google.Protobuf.ByteString.CopyFrom(pm.ToArray()));
        }
        using (var tm = new MemoryStream())
        {
            var to = new Google.Protobuf.CodedOutputStream(tm);
            to.WriteTag(3, Google.Protobuf.WireFormat.WireType.Varint); to.WriteEnum(2); // model_type = BPE
            to.WriteTag(40, Google.Protobuf.WireFormat.WireType.Varint); to.WriteInt32(0);  // unk_id
            to.WriteTag(41, Google.Protobuf.WireFormat.WireType.Varint); to.WriteInt32(1);  // bos_id
            to.WriteTag(42, Google.Protobuf.WireFormat.WireType.Varint); to.WriteInt32(2);  // eos_id
            to.Flush();
            o.WriteTag(2, Google.Protobuf.WireFormat.WireType.LengthDelimited); o.WriteBytes(Google.Protobuf.ByteString.CopyFrom(tm.ToArray()));
        }
        using (var nm = new MemoryStream())
        {
            var no = new Google.Protobuf.CodedOutputStream(nm);
            no.WriteTag(1, Google.Protobuf.WireFormat.WireType.LengthDelimited); no.WriteString("identity");
            no.WriteTag(3, Google.Protobuf.WireFormat.WireType.Varint); no.WriteBool(true);  // add_dummy_prefix
            no.WriteTag(4, Google.Protobuf.WireFormat.WireType.Varint); no.WriteBool(true);  // remove_extra_whitespaces
            no.WriteTag(5, Google.Protobuf.WireFormat.WireType.Varint); no.WriteBool(true);  // escape_whitespaces
            no.Flush();
            o.WriteTag(3, Google.Protobuf.WireFormat.WireType.LengthDelimited); o.WriteBytes(Google.Protobuf.ByteString.CopyFrom(nm.ToArray()));
        }
        o.Flush();
        var path = Path.Combine(_dir.FullName, "tokenizer.model");
        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    [Fact]
    public void SentencePieceModelNextToTheModelIsUsed()
    {
        WriteModel();
        var tok = Quantc.Core.Data.HfTokenizer.FromFolder(_dir.FullName)!;
        Assert.Equal("sentencepiece", tok.Name);
        Assert.Equal(1, tok.Bos);
        var ids = tok.Encode("hello world");
        Assert.NotEmpty(ids);
        Assert.Contains(15L, ids);          // "hello" merges into one piece
        Assert.All(ids, id => Assert.InRange(id, 0, 15));
    }

    [Fact]
    public void ADamagedSentencePieceModelIsBadInput()
    {
        File.WriteAllBytes(Path.Combine(_dir.FullName, "tokenizer.model"), [1, 2, 3, 4, 5]);
        Assert.Throws<Quantc.Onnx.BadInputException>(() => Quantc.Core.Data.HfTokenizer.FromFolder(_dir.FullName));
    }
}
