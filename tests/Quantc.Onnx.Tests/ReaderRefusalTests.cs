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

    /// <summary>A folder is refused; a GenAI folder (model.onnx inside) is pointed at its model.</summary>
    [Fact]
    public void AFolderIsNotAModel()
    {
        var plain = Directory.CreateDirectory(Path.Combine(_dir.FullName, "plain")).FullName;
        var e = Assert.Throws<BadInputException>(() => Model.Load(plain).Dispose());
        Assert.Equal($"{plain}: is a folder, not an ONNX model file", e.Message);
        string model = ModelWithExternal(Path.Combine(_dir.FullName, "genai"), _ => { });
        e = Assert.Throws<BadInputException>(() => Model.Load(Path.GetDirectoryName(model)!).Dispose());
        Assert.EndsWith($"is a folder, not an ONNX model file (its model is {model})", e.Message);
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

    [Fact]
    public void OtherBadExternalReferencesAreRefused()
    {
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "neglen"), t => SetKey(t, "length", "-64")), "not a non-negative integer");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "hexoff"), t => SetKey(t, "offset", "0x10")), "not a non-negative integer");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "noloc"), t => t.ExternalData.Clear()), "without a location");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "nul"), t => SetKey(t, "location", "w.bin\0x")), "NUL");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "str"), t => t.DataType = (int)TensorProto.Types.DataType.String), "string tensors");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "dtype"), t => t.DataType = 99), "unknown data type 99");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "negdim"), t => t.Dims[0] = -4), "negative dimension");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "inner-dd"), t => SetKey(t, "location", "sub/../w.bin")), "contains '..'");
        Refused(ModelWithExternal(Path.Combine(_dir.FullName, "backslash-dd"), t => SetKey(t, "location", "sub\\..\\w.bin")), "contains '..'");
        var dirLoc = ModelWithExternal(Path.Combine(_dir.FullName, "dirloc"), t => SetKey(t, "location", "adir"));
        Directory.CreateDirectory(Path.Combine(_dir.FullName, "dirloc", "adir"));
        Refused(dirLoc, "is a folder, not a file");
        // A symlink whose target stays inside the folder is fine.
        var inside = ModelWithExternal(Path.Combine(_dir.FullName, "inlink"), t => SetKey(t, "location", "alias.bin"));
        File.CreateSymbolicLink(Path.Combine(_dir.FullName, "inlink", "alias.bin"), "w.bin");
        Model.Load(inside).Dispose();
        // A model folder reached through a symlink is fine too: the check compares resolved paths.
        Directory.CreateSymbolicLink(Path.Combine(_dir.FullName, "linked-folder"), Path.Combine(_dir.FullName, "inlink"));
        Model.Load(Path.Combine(_dir.FullName, "linked-folder", "model.onnx")).Dispose();
    }

    [Fact]
    public void ChecksumsAreVerifiedWhenAsked()
    {
        var path = ModelWithExternal(Path.Combine(_dir.FullName, "sum"), t => SetKey(t, "checksum", new string('0', 40)));
        Model.Load(path).Dispose(); // not verified by default (it reads the whole file)
        var e = Assert.Throws<BadInputException>(() => Model.Load(path, new OnnxReadOptions { VerifyChecksums = true }).Dispose());
        Assert.Contains("checksum", e.Message);
        string good = Convert.ToHexStringLower(System.Security.Cryptography.SHA1.HashData(new byte[64]));
        var ok = ModelWithExternal(Path.Combine(_dir.FullName, "sum-ok"), t => SetKey(t, "checksum", good));
        Model.Load(ok, new OnnxReadOptions { VerifyChecksums = true }).Dispose();
    }

    /// <summary>Tensors in subgraphs, node attributes and functions are checked like initializers.</summary>
    [Theory]
    [InlineData("subgraph")]
    [InlineData("attribute")]
    [InlineData("function")]
    [InlineData("sparse")]
    public void NestedTensorsAreCheckedToo(string where)
    {
        var folder = Path.Combine(_dir.FullName, "nested-" + where);
        Directory.CreateDirectory(folder);
        var bad = new TensorProto { Name = "bad", DataType = 1, DataLocation = TensorProto.Types.DataLocation.External };
        bad.Dims.Add(4);
        bad.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "../escape.bin" });
        var m = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        m.Graph.Input.Add(new ValueInfoProto { Name = "c", Type = TestModels.T(9) });
        var constant = new NodeProto { OpType = "Constant", Output = { "k" } };
        switch (where)
        {
            case "subgraph":
                var branch = new GraphProto { Name = "b", Initializer = { bad }, Output = { new ValueInfoProto { Name = "bad" } } };
                var iff = new NodeProto { OpType = "If", Input = { "c" }, Output = { "y" } };
                iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch });
                iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch.Clone() });
                m.Graph.Node.Add(iff);
                m.Graph.Output.Add(new ValueInfoProto { Name = "y" });
                break;
            case "attribute":
                constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = bad });
                m.Graph.Node.Add(constant);
                m.Graph.Output.Add(new ValueInfoProto { Name = "k" });
                break;
            case "function":
                constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = bad });
                m.Functions.Add(new FunctionProto { Name = "f", Domain = "local", Output = { "k" }, Node = { constant } });
                break;
            case "sparse":
                var idx = new TensorProto { Name = "idx", DataType = 7, Dims = { 1 }, Int64Data = { 0 } };
                bad.Dims[0] = 1;
                m.Graph.SparseInitializer.Add(new SparseTensorProto { Values = bad, Indices = idx, Dims = { 4 } });
                break;
        }
        var path = Path.Combine(folder, "model.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        Refused(path, "contains '..'");
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

    /// <summary>Loads <paramref name="path"/>: a clean load or a BadInputException — nothing else, and within seconds.</summary>
    private static void LoadsOrRefuses(string path)
    {
        var load = Task.Run(() =>
        {
            try
            {
                using var m = Model.Load(path);
                m.Graph.FindProblems(); // the IR over a loaded (possibly odd) model can be inspected
                return true;
            }
            catch (BadInputException e)
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message)); // a reason (the CLI prints it on one line)
                return false;
            }
        });
        Assert.True(load.Wait(TimeSpan.FromSeconds(20)), $"loading {path} did not finish within 20 s");
    }

    private static void Fuzz(string path, byte[] bytes, int seed, int truncations = 200, int flips = 300)
    {
        var rng = new Random(seed);
        for (int n = 0; n < bytes.Length; n += Math.Max(1, bytes.Length / truncations))
        {
            File.WriteAllBytes(path, bytes[..n]);
            LoadsOrRefuses(path);
        }
        for (int i = 0; i < flips; i++)
        {
            var b = (byte[])bytes.Clone();
            for (int f = 0; f < 1 + i % 4; f++)
            {
                int at = rng.Next(b.Length);
                // Mostly single bit flips; sometimes a whole byte of 0x00 / 0xFF / random (lengths and tags go wild).
                b[at] = (i % 5) switch { 0 => 0, 1 => 0xFF, 2 => (byte)rng.Next(256), _ => (byte)(b[at] ^ (1 << rng.Next(8))) };
            }
            File.WriteAllBytes(path, b);
            LoadsOrRefuses(path);
        }
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>Truncations at many offsets and byte flips of several corpus models: a clean load or a BadInputException — nothing else, never a hang.</summary>
    [Theory]
    [InlineData("node/test_loop11")]
    [InlineData("node/test_if_seq")]
    [InlineData("pytorch-converted/test_Conv2d")]
    [InlineData("node/test_scan9_sum")]
    [InlineData("simple/test_gradient_of_add_and_mul")]
    [InlineData("node/test_qlinearmatmul_2D")]
    [InlineData("node/test_sequence_map_add_2_sequences")]
    [InlineData("node/test_optional_has_element_empty")]
    public void TruncatedAndCorruptedCorpusModelsNeverCrash(string model)
    {
        var src = Path.Combine(ConformanceCorpusTests.Corpus, model, "model.onnx");
        Assert.True(File.Exists(src), $"{src} missing: install Debian's libonnx-testdata");
        var bytes = File.ReadAllBytes(src);
        Fuzz(Path.Combine(_dir.FullName, "broken.onnx"), bytes, bytes.Length);
    }

    /// <summary>The same for IR-built models (subgraphs, a Constant, a Loop capturing outer values), inline and with external data — whose data file is truncated too.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TruncatedAndCorruptedIrBuiltModelsNeverCrash(bool external)
    {
        var path = Path.Combine(_dir.FullName, "ir", "model.onnx");
        using (var m = TestModels.Build())
            m.Save(path, new OnnxWriteOptions { ExternalDataThreshold = external ? 1024 : long.MaxValue });
        var bytes = File.ReadAllBytes(path);
        Fuzz(path, bytes, external ? 1 : 2, truncations: 100, flips: 200);
        Model.Load(path).Dispose(); // restored
        if (!external) return;

        var data = path + ".data";
        var dataBytes = File.ReadAllBytes(data);
        for (int n = 0; n < dataBytes.Length; n += dataBytes.Length / 40)
        {
            File.WriteAllBytes(data, dataBytes[..n]);
            var e = Assert.Throws<BadInputException>(() => Model.Load(path).Dispose());
            Assert.True(e.Message.Contains("past the end") || e.Message.Contains("beyond the end"), e.Message);
        }
        File.Delete(data);
        Assert.Contains("not found", Assert.Throws<BadInputException>(() => Model.Load(path).Dispose()).Message);
        File.WriteAllBytes(data, [.. dataBytes, 1, 2, 3]); // a longer data file is fine: offsets and lengths say where tensors are
        Model.Load(path).Dispose();
    }
}
