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
