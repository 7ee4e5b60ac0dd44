using System.IO.Compression;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

public sealed class DataLoaderTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-data");

    public void Dispose() => _dir.Delete(recursive: true);

    private static TypeProto T(int elem, params object[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims)
            s.Dim.Add(d is string p ? new TensorShapeProto.Types.Dimension { DimParam = p } : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d) });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elem, Shape = s } };
    }

    /// <summary>A byte-level "language model": logits = Embedding(input_ids) · W, vocab 257.</summary>
    private Model TinyLm()
    {
        var m = Model.Create();
        var g = m.Graph;
        var ids = g.AddInput("input_ids", T(7, "batch", "seq"));
        g.AddInput("attention_mask", T(7, "batch", "seq"));
        var rng = new Random(2);
        var emb = g.AddInitializer(Tensor.FromFloats("embed", [257, 8], Enumerable.Range(0, 257 * 8).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray()));
        var w = g.AddInitializer(Tensor.FromFloats("lm_head.weight", [8, 257], Enumerable.Range(0, 257 * 8).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray()));
        var h = g.AddNode("Gather", [emb, ids], outputNames: ["h"]).Output;
        var logits = g.AddNode("MatMul", [h, w], outputNames: ["logits"]).Output;
        logits.Type = T(1, "batch", "seq", 257);
        g.AddOutput(logits);
        m.SetMetadata("quantc.tokenizer", "byte");
        var path = Path.Combine(_dir.FullName, "lm.onnx");
        m.Save(path);
        m.Dispose();
        return Model.Load(path);
    }

    /// <summary>Bos = false (--no-bos): the same text, no BOS first, the sample filled with text instead.</summary>
    [Fact]
    public void TextWithoutBosStartsWithTheText()
    {
        using var m = TinyLm();
        var path = Path.Combine(_dir.FullName, "t.txt");
        File.WriteAllText(path, string.Concat(Enumerable.Repeat("The quick brown fox. ", 20)));
        var d = DataLoader.Load(m, path, new DataOptions { SequenceLength = 16, MaxSamples = 2, Bos = false });
        Assert.All(d.Tokens!, t => Assert.Equal(16, t.Length));
        Assert.Equal("The quick brown ", string.Concat(d.Tokens![0].Select(t => (char)t)));
        Assert.DoesNotContain(d.Tokens!.SelectMany(t => t), t => t == ByteTokenizer.BosId);
        Assert.Contains("without BOS", d.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void TextIsTokenizedIntoFixedLengthSamplesWithBos()
    {
        using var m = TinyLm();
        var path = Path.Combine(_dir.FullName, "t.txt");
        File.WriteAllText(path, string.Concat(Enumerable.Repeat("The quick brown fox. ", 20)));
        var d = DataLoader.Load(m, path, new DataOptions { SequenceLength = 16, MaxSamples = 3 });
        Assert.Equal(3, d.Samples.Count);
        Assert.All(d.Tokens!, t => Assert.Equal(16, t.Length));
        Assert.Equal(ByteTokenizer.BosId, d.Tokens![0][0]);
        Assert.Equal((long)'T', d.Tokens[0][1]);
        var (mask, shape) = d.Samples[0].Inputs["attention_mask"];
        Assert.Equal(new long[] { 1, 16 }, shape);
        Assert.All((long[])mask, v => Assert.Equal(1, v));

        // The samples run: verify the model against itself on this text.
        var r = Verifier.Run(m, m, d.Samples, d.Tokens);
        Assert.Equal(1.0, r.Logits!.Top1Agreement);
        Assert.True(r.Logits.OriginalPerplexity > 1);
    }

    [Fact]
    public void TokenIdsFromNpyAndJsonLines()
    {
        using var m = TinyLm();
        var npy = Path.Combine(_dir.FullName, "ids.npy");
        Npy.Write(npy, new long[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        var d = DataLoader.Load(m, npy);
        Assert.Equal(2, d.Samples.Count);
        Assert.Equal(new long[] { 4, 5, 6 }, d.Tokens![1]);

        var jsonl = Path.Combine(_dir.FullName, "ids.jsonl");
        File.WriteAllLines(jsonl, ["[256, 10, 20]", "", "[256, 30]"]);
        d = DataLoader.Load(m, jsonl);
        Assert.Equal(2, d.Samples.Count);
        Assert.Equal(new long[] { 256, 30 }, d.Tokens![1]);

        File.WriteAllLines(jsonl, ["[1, 2", "x"]);
        var e = Assert.Throws<BadInputException>(() => DataLoader.Load(m, jsonl));
        Assert.Contains(":1:", e.Message);
    }

    /// <summary>--seq-len applies to token ids: longer sequences are cut into pieces of it, and the description says so.</summary>
    [Fact]
    public void TokenIdsAreCutToTheSequenceLength()
    {
        using var m = TinyLm();
        var npy = Path.Combine(_dir.FullName, "long.npy");
        Npy.Write(npy, Enumerable.Range(0, 20).Select(i => (long)i).ToArray(), [2, 10]);
        var d = DataLoader.Load(m, npy, new DataOptions { SequenceLength = 4 });
        // Each row of 10 → 4 + 4 + 2.
        Assert.Equal(6, d.Samples.Count);
        Assert.Equal(new long[] { 4, 5, 6, 7 }, d.Tokens![1]);
        Assert.Equal(new long[] { 8, 9 }, d.Tokens[2]);
        Assert.Contains("2 sequences longer than 4 tokens cut into pieces of 4", d.Description);
        Assert.Equal(2, DataLoader.Load(m, npy, new DataOptions { SequenceLength = 16 }).Samples.Count);
    }

    /// <summary>Text is cut at blank-line document boundaries (no sample spans two documents) unless told not to, and the description says how.</summary>
    [Fact]
    public void TextIsCutAtDocumentBoundaries()
    {
        using var m = TinyLm();
        var path = Path.Combine(_dir.FullName, "docs.txt");
        string a = new('a', 40), b = new('b', 12), c = new('c', 5);
        File.WriteAllText(path, $"{a}\n\n{b}\r\n  \r\n\n{c}\n\n");
        var d = DataLoader.Load(m, path, new DataOptions { SequenceLength = 16 });
        // a: 15 + 15 + 10 tokens; b: 12; c: 5 < 8 tokens, dropped. Each sample starts with BOS and holds one letter.
        Assert.Equal(new[] { 16, 16, 11, 13 }, d.Tokens!.Select(t => t.Length));
        Assert.All(d.Tokens!, t => Assert.Equal(ByteTokenizer.BosId, t[0]));
        Assert.All(d.Tokens!, t => Assert.Single(t.Skip(1).Distinct()));
        Assert.Contains("cut at blank-line document boundaries, 3 documents", d.Description);

        var stream = DataLoader.Load(m, path, new DataOptions { SequenceLength = 16, SplitDocuments = false });
        Assert.All(stream.Tokens!, t => Assert.Equal(16, t.Length));
        Assert.Contains(stream.Tokens!, t => t.Skip(1).Distinct().Count() > 1);
        Assert.Contains("across document boundaries", stream.Description);
    }

    [Fact]
    public void RawInputsFromNpzArchives()
    {
        using var m = TinyLm();
        var npz = Path.Combine(_dir.FullName, "s.npz");
        using (var zip = ZipFile.Open(npz, ZipArchiveMode.Create))
        {
            foreach (var name in new[] { "input_ids", "attention_mask" })
            {
                var tmp = Path.Combine(_dir.FullName, name + ".npy");
                Npy.Write(tmp, new long[] { 1, 2, 3 }, [1, 3]);
                zip.CreateEntryFromFile(tmp, name + ".npy");
            }
        }
        var d = DataLoader.Load(m, npz);
        var s = Assert.Single(d.Samples);
        Assert.Equal(new long[] { 1, 3 }, s.Inputs["input_ids"].Shape);
        var stats = Calibrator.Collect(m, ["h"], d.Samples);
        Assert.Equal(3, stats["h"].Tokens);
    }

    [Fact]
    public void RandomDataIsOnlyUsedWhenAskedForAndWarns()
    {
        using var m = TinyLm();
        var d = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 2, SequenceLength = 8 });
        Assert.Equal(2, d.Samples.Count);
        Assert.Contains(d.Warnings, w => w.Contains("random", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("missing.txt")]
    [InlineData("bad.npy")]
    [InlineData("bad.npz")]
    [InlineData("empty-folder")]
    public void BadDataIsAClearError(string name)
    {
        using var m = TinyLm();
        var p = Path.Combine(_dir.FullName, name);
        if (name == "bad.npy") File.WriteAllText(p, "not numpy");
        if (name == "bad.npz") File.WriteAllText(p, "not a zip");
        if (name == "empty-folder") Directory.CreateDirectory(p);
        Assert.Throws<BadInputException>(() => DataLoader.Load(m, p));
    }

    [Fact]
    public void AFloatNpyFeedsASingleInputModel()
    {
        using var m = Model.Create();
        var x = m.Graph.AddInput("x", T(1, "n", 3));
        m.Graph.AddOutput(m.Graph.AddNode("Relu", [x], outputNames: ["y"]).Output);
        var npy = Path.Combine(_dir.FullName, "x.npy");
        Npy.Write(npy, new float[] { 1, -2, 3, 4, 5, -6 }, [2, 3]);
        var d = DataLoader.Load(m, npy);
        var s = Assert.Single(d.Samples);
        Assert.Equal(new long[] { 2, 3 }, s.Inputs["x"].Shape);
        Assert.Equal(2, Calibrator.Collect(m, ["y"], d.Samples)["y"].Tokens);
        using var lm = TinyLm(); // two inputs: a float .npy is ambiguous
        Assert.Throws<BadInputException>(() => DataLoader.Load(lm, npy));
    }
}
