using Google.Protobuf;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx.Tests;

/// <summary>Every refusal of the reader, and truncated / corrupted files of every kind: a BadInputException with a reason, never another exception.</summary>
public sealed class ReaderRefusalTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-refuse");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>A model whose one initializer W [4, 4] float is external (in w.bin), with the given external_data entries.</summary>
    private string ModelWithExternal(string folder, Action<TensorProto> edit, int fileBytes = 64)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, "w.bin"), new byte[fileBytes]);
        var t = new TensorProto { Name = "W", DataType = 1, DataLocation = TensorProto.Types.DataLocation.External };
        t.Dims.Add(4);
        t.Dims.Add(4);
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
        edit(t);
        var m = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        m.Graph.Initializer.Add(t);
        m.Graph.Output.Add(new ValueInfoProto { Name = "W" });
        var path = Path.Combine(folder, "model.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    private static void Refused(string path, string reason)
    {
        var e = Assert.Throws<BadInputException>(() => Model.Load(path).Dispose());
        Assert.Contains(reason, e.Message);
    }

    private static void SetKey(TensorProto t, string key, string value)
    {
        foreach (var kv in t.ExternalData) if (kv.Key == key) { kv.Value = value; return; }
        t.ExternalData.Add(new StringStringEntryProto { Key = key, Value = value });
    }

    [Fact]
    public void AValidExternalTensorLoadsLazily()
    {
        using var m = Model.Load(ModelWithExternal(Path.Combine(_dir.FullName, "ok"), _ => { }));
        var w = m.Graph["W"].Initializer!;
        Assert.True(w.IsExternal);
        Assert.Equal(16, w.ToFloat32().Length);
    }

    [Fact]
    public void AbsoluteLocationsAreRefused() =>
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "abs"), t => SetKey(t, "location", Path.Combine(_dir.FullName, "abs", "w.bin"))), "is absolute");

    [Fact]
    public void DotDotSegmentsAreRefused()
    {
        File.WriteAllBytes(Path.Combine(_dir.FullName, "outside.bin"), new byte[64]);
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "dd"), t => SetKey(t, "location", "../outside.bin")), "contains '..'");
    }

    [Fact]
    public void SymlinksLeavingTheFolderAreRefused()
    {
        var secret = Path.Combine(_dir.FullName, "secret.bin");
        File.WriteAllBytes(secret, new byte[64]);
        var folder = Path.Combine(_dir.FullName, "link");
        var path = ModelWithExternal(folder, t => SetKey(t, "location", "escape.bin"));
        File.CreateSymbolicLink(Path.Combine(folder, "escape.bin"), secret);
        Refused(path, "outside the model's folder");
    }

    [Fact]
    public void OffsetAndLengthBeyondTheFileAreRefused()
    {
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "off"), t => SetKey(t, "offset", "100")), "beyond the end");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "len"), t => { SetKey(t, "offset", "32"); SetKey(t, "length", "64"); }), "runs past the end");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "neg"), t => SetKey(t, "offset", "-4")), "not a non-negative integer");
    }

    [Fact]
    public void LengthDisagreeingWithTheShapeIsRefused() =>
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "short"), t => SetKey(t, "length", "32")), "needs 64");

    [Fact]
    public void MissingExternalFilesAreRefused() =>
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "miss"), t => SetKey(t, "location", "nope.bin")), "not found");

    [Fact]
    public void RawDataSizeMustMatchTheShape()
    {
        var m = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        var t = new TensorProto { Name = "W", DataType = 1, RawData = ByteString.CopyFrom(new byte[12]) };
        t.Dims.Add(4);
        m.Graph.Initializer.Add(t);
        var path = Path.Combine(_dir.FullName, "raw.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        Refused(path, "raw_data has 12 bytes");
        t.ClearRawData();
        t.FloatData.Add([1f, 2f]);
        File.WriteAllBytes(path, m.ToByteArray());
        Refused(path, "holds 2 values");
    }

    [Theory]
    [InlineData("empty")]
    [InlineData("folder")]
    [InlineData("missing")]
    [InlineData("random")]
    [InlineData("text")]
    [InlineData("no-graph")]
    public void NotAModelAtAll(string kind)
    {
        string path = Path.Combine(_dir.FullName, kind + ".onnx");
        switch (kind)
        {
            case "empty": File.WriteAllBytes(path, []); break;
            case "folder": Directory.CreateDirectory(path); break;
            case "random": File.WriteAllBytes(path, Enumerable.Range(0, 4096).Select(i => (byte)(i * 7919 % 251)).ToArray()); break;
            case "text": File.WriteAllText(path, "name: not a model\n"); break;
            case "no-graph": File.WriteAllBytes(path, new ModelProto { IrVersion = 9 }.ToByteArray()); break;
        }
        Assert.Throws<BadInputException>(() => Model.Load(path).Dispose());
    }

    /// <summary>Truncations at many offsets and byte flips of several corpus models: a clean load or a BadInputException — nothing else.</summary>
    [Theory]
    [InlineData("node/test_loop11")]
    [InlineData("node/test_if_seq")]
    [InlineData("pytorch-converted/test_Conv2d")]
    [InlineData("node/test_scan9_sum")]
    [InlineData("simple/test_gradient_of_add_and_mul")]
    public void TruncatedAndCorruptedFilesNeverCrash(string model)
    {
        var src = Path.Combine("/usr/share/libonnx-testdata/data", model, "model.onnx");
        Assert.True(File.Exists(src), $"{src} missing: install libonnx-testdata");
        var bytes = File.ReadAllBytes(src);
        var path = Path.Combine(_dir.FullName, "broken.onnx");
        var rng = new Random(bytes.Length);
        void Try(byte[] b)
        {
            File.WriteAllBytes(path, b);
            try { Model.Load(path).Dispose(); }
            catch (BadInputException) { }
        }
        for (int n = 0; n < bytes.Length; n += Math.Max(1, bytes.Length / 200)) Try(bytes[..n]);
        for (int i = 0; i < 300; i++)
        {
            var b = (byte[])bytes.Clone();
            for (int f = 0; f < 1 + i % 4; f++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
            Try(b);
        }
    }
}
