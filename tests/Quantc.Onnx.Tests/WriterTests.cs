using System.Security.Cryptography;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using static Quantc.Onnx.Tests.TestModels;

namespace Quantc.Onnx.Tests;

/// <summary>Round trips of IR-built models through ONNX Runtime, determinism, atomicity, and what must survive a load/save.</summary>
public sealed class WriterTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-writer");

    public void Dispose() => _dir.Delete(recursive: true);

    private string P(string name) => Path.Combine(_dir.FullName, name);

    private static float[] RandomInput(int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, (int)(XShape[0] * XShape[1])).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
    }

    private static float[] Run(string path, float[] x, bool flag)
    {
        using var s = new InferenceSession(path);
        using var xv = OrtValue.CreateTensorValueFromMemory(x, XShape);
        using var fv = OrtValue.CreateTensorValueFromMemory(new[] { flag }, []);
        using var ro = new RunOptions();
        using var o = s.Run(ro, ["x", "flag"], [xv, fv], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static float[] Run(string path, bool flag) => Run(path, RandomInput(1), flag);

    private static void BitIdentical(float[] a, float[] b) =>
        Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), b.Select(BitConverter.SingleToInt32Bits));

    [Theory]
    [InlineData(long.MaxValue)]  // everything inline
    [InlineData(1024L)]          // large tensors external
    public void IrBuiltModelsRoundTripBitIdenticalInOnnxRuntime(long threshold)
    {
        var options = new OnnxWriteOptions { ExternalDataThreshold = threshold };
        bool external = threshold != long.MaxValue;
        var inputs = Enumerable.Range(100, 3).Select(RandomInput).ToList();
        // ORT runs the in-memory model (never written) as the reference.
        using var built = Build();
        var (proto, payload) = built.ToProto();
        var reference = new List<float[]>();
        using (var mem = new InferenceSession(InlineAll(proto, payload).ToByteArray()))
        foreach (var x in inputs)
            foreach (bool flag in new[] { true, false })
            {
                using var xv = OrtValue.CreateTensorValueFromMemory(x, XShape);
                using var fv = OrtValue.CreateTensorValueFromMemory(new[] { flag }, []);
                using var ro = new RunOptions();
                using var o = mem.Run(ro, ["x", "flag"], [xv, fv], ["y"]);
                reference.Add(o[0].GetTensorDataAsSpan<float>().ToArray());
            }

        var r = built.Save(P("a.onnx"), options);
        Assert.Equal(external, File.Exists(P("a.onnx.data")));
        Assert.Equal(external ? 3 : 0, r.ExternalTensors); // w1 (128 KiB), w2 (96 KiB), b1 (2 KiB)
        using (var m = Model.Load(P("a.onnx")))
        {
            m.Graph.Validate();
            Assert.Equal(built.Graph.AllNodes().Select(n => n.OpType), m.Graph.AllNodes().Select(n => n.OpType));
            Assert.Equal(external, m.Graph["w1"].Initializer!.IsExternal);                // mapped, not read
            Assert.Equal(built.Graph["w2"].Initializer!.ToFloat32(), m.Graph["w2"].Initializer!.ToFloat32());
            Assert.Equal(2, m.Graph.Nodes.Single(n => n.OpType == "Loop").Subgraphs.Single().CapturedValues().Count());
            m.Save(P("sub/b.onnx"), options); // mapped tensors re-saved to a new folder
        }
        Assert.Equal(external, File.Exists(P("sub/b.onnx.data")));
        int k = 0;
        foreach (var x in inputs)
            foreach (bool flag in new[] { true, false })
            {
                BitIdentical(reference[k], Run(P("a.onnx"), x, flag));
                BitIdentical(reference[k], Run(P("sub/b.onnx"), x, flag));
                k++;
            }
        Assert.NotEqual(reference[0], reference[1]); // both If branches ran
    }

    /// <summary>A copy of the proto with every payload inline (for an in-memory ORT session).</summary>
    private static ModelProto InlineAll(ModelProto proto, Func<TensorProto, TensorData?> payload)
    {
        var copy = proto.Clone();
        var src = ModelWalker.Tensors(proto).Select(t => t.Tensor).ToList();
        var dst = ModelWalker.Tensors(copy).Select(t => t.Tensor).ToList();
        for (int i = 0; i < src.Count; i++)
            if (src[i].DataLocation == TensorProto.Types.DataLocation.External)
            {
                dst[i].DataLocation = TensorProto.Types.DataLocation.Default;
                dst[i].ExternalData.Clear();
                dst[i].RawData = ByteString.CopyFrom(payload(src[i])!.Span);
            }
        return copy;
    }

    [Fact]
    public void TwoSavesAreByteIdentical()
    {
        using (var m = Build()) m.Save(P("d1/m.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        using (var m = Build()) m.Save(P("d2/m.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        Assert.Equal(File.ReadAllBytes(P("d1/m.onnx")), File.ReadAllBytes(P("d2/m.onnx")));
        Assert.Equal(File.ReadAllBytes(P("d1/m.onnx.data")), File.ReadAllBytes(P("d2/m.onnx.data")));
        // A loaded model saved again is also identical.
        using (var m = Model.Load(P("d1/m.onnx"))) m.Save(P("d3/m.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        Assert.Equal(File.ReadAllBytes(P("d1/m.onnx")), File.ReadAllBytes(P("d3/m.onnx")));
        Assert.Equal(File.ReadAllBytes(P("d1/m.onnx.data")), File.ReadAllBytes(P("d3/m.onnx.data")));
    }

    [Fact]
    public void TheInputIsNeverModifiedAndCanBeOverwrittenInPlace()
    {
        var options = new OnnxWriteOptions { ExternalDataThreshold = 1024 };
        using (var m = Build()) m.Save(P("in.onnx"), options);
        string h1 = Hash(P("in.onnx")), d1 = Hash(P("in.onnx.data"));
        var before = Run(P("in.onnx"), true);
        using (var m = Model.Load(P("in.onnx")))
        {
            m.Save(P("elsewhere.onnx"), options);
            m.Save(P("elsewhere.onnx"), options with { ExternalDataThreshold = long.MaxValue }); // replaces a model that had external data by an inline one
            Assert.Equal(h1, Hash(P("in.onnx")));
            Assert.Equal(d1, Hash(P("in.onnx.data")));
            // Saving over the very files the model is mapped from: temporaries, then rename; the mapping keeps the old bytes alive.
            m.Save(P("in.onnx"), options);
            Assert.Equal(h1, Hash(P("in.onnx")));
            Assert.Equal(d1, Hash(P("in.onnx.data")));
            // And once more with a different layout, while still mapped.
            m.Save(P("in.onnx"), options with { Alignment = 64 });
        }
        Assert.Equal(before, Run(P("in.onnx"), true));
        Assert.Equal(before, Run(P("elsewhere.onnx"), true));
        Assert.Empty(Directory.GetFiles(_dir.FullName, ".*", SearchOption.AllDirectories));
    }

    private sealed class FailingData(long length) : TensorData
    {
        public override long Length => length;
        public override ReadOnlySpan<byte> Slice(long offset, int len) => throw new IOException("read error (simulated)");
        public override void CopyTo(Stream destination)
        {
            destination.Write(new byte[length / 2]);
            throw new IOException("disk full (simulated)");
        }
    }

    /// <summary>Every file under the test folder with its hash.</summary>
    private Dictionary<string, string> Snapshot() =>
        Directory.GetFiles(_dir.FullName, "*", SearchOption.AllDirectories).ToDictionary(f => Path.GetRelativePath(_dir.FullName, f), Hash);

    [Theory]
    [InlineData(1024L)]          // fails while streaming external data
    [InlineData(long.MaxValue)]  // fails while gathering an inline payload
    public void AFailedWriteLeavesNothingHalfWritten(long threshold)
    {
        var options = new OnnxWriteOptions { ExternalDataThreshold = threshold };
        using (var ok = Build()) ok.Save(P("dest.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        using (var ok = Build()) ok.Save(P("inline.onnx"), new OnnxWriteOptions { ExternalDataThreshold = long.MaxValue });
        var before = Snapshot();
        using var m = Build();
        m.Graph.SetInitializer(m.Graph["w1"], Tensor.FromData("w1", 1, [64, 512], new FailingData(64 * 512 * 4)));
        foreach (var dest in new[] { "dest.onnx", "inline.onnx", "fresh.onnx", "new/sub/fresh.onnx" })
        {
            Assert.Throws<IOException>(() => m.Save(P(dest), options));
            // The previous models are untouched, no new model appears, no temporary is left behind.
            var after = Snapshot();
            Assert.Equal(before.OrderBy(kv => kv.Key), after.OrderBy(kv => kv.Key));
        }
        var outputs = Run(P("dest.onnx"), false);
        Assert.Equal(outputs, Run(P("inline.onnx"), false));
    }

    [Fact]
    public void TensorsMoveToExternalDataWhenTheProtoWouldBeTooLarge()
    {
        // Threshold off; a 64 KiB proto limit stands in for protobuf's 2 GiB: the largest tensors move out until the rest fits.
        using var m = Build();
        var r = m.Save(P("auto.onnx"), new OnnxWriteOptions { ExternalDataThreshold = long.MaxValue, MaxProtoBytes = 64 << 10 });
        Assert.Equal(2, r.ExternalTensors); // w1 (128 KiB) and then w2 (96 KiB); the rest is 2.5 KiB
        Assert.True(new FileInfo(P("auto.onnx")).Length < 64 << 10);
        using var back = Model.Load(P("auto.onnx"));
        Assert.True(back.Graph["w1"].Initializer!.IsExternal);
        Assert.True(back.Graph["w2"].Initializer!.IsExternal);
        Assert.False(back.Graph["b1"].Initializer!.IsExternal);
        Assert.Equal(Run(P("auto.onnx"), true), RunInMemory(true));
    }

    private static float[] RunInMemory(bool flag)
    {
        using var m = Build();
        var (proto, payload) = m.ToProto();
        using var s = new InferenceSession(InlineAll(proto, payload).ToByteArray());
        using var xv = OrtValue.CreateTensorValueFromMemory(RandomInput(1), XShape);
        using var fv = OrtValue.CreateTensorValueFromMemory(new[] { flag }, []);
        using var ro = new RunOptions();
        using var o = s.Run(ro, ["x", "flag"], [xv, fv], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary><paramref name="message"/> serialized with unknown fields appended (a varint and a string, numbers unused by ONNX), parsed back so that it carries them.</summary>
    private static T WithUnknownFields<T>(T message, int field) where T : IMessage<T>, new()
    {
        using var ms = new MemoryStream();
        var cos = new CodedOutputStream(ms);
        message.WriteTo(cos);
        cos.WriteTag(field, WireFormat.WireType.Varint);
        cos.WriteUInt64(42);
        cos.WriteTag(field + 1, WireFormat.WireType.LengthDelimited);
        cos.WriteString("from a newer ONNX");
        cos.Flush();
        return new MessageParser<T>(() => new T()).ParseFrom(ms.ToArray());
    }

    [Fact]
    public void UnknownFieldsMetadataDocStringsAndFunctionsSurvive()
    {
        using (var m = Build()) m.Save(P("k.onnx"));
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(P("k.onnx")));
        var f = new FunctionProto { Name = "f", Domain = "custom", DocString = "a function" };
        f.Input.Add("a");
        f.Output.Add("b");
        f.Node.Add(new NodeProto { OpType = "Identity", Input = { "a" }, Output = { "b" } });
        proto.Functions.Add(WithUnknownFields(f, 1000));
        proto.MetadataProps.Add(new StringStringEntryProto { Key = "second", Value = "entry" });
        var g = proto.Graph;
        g.DocString = "graph doc";
        g.Node[0].DocString = "node doc";
        // Unknown fields at every level: node, attribute, tensor, value info, graph, a subgraph's node, the model.
        g.Node[0] = WithUnknownFields(g.Node[0], 1001);
        var loop = g.Node.Single(n => n.OpType == "Loop");
        loop.Attribute[0].G.Node[0] = WithUnknownFields(loop.Attribute[0].G.Node[0], 1002);
        loop.Attribute[0] = WithUnknownFields(loop.Attribute[0], 1003);
        g.Initializer[0] = WithUnknownFields(g.Initializer[0], 1004);
        g.Input[0] = WithUnknownFields(g.Input[0], 1005);
        proto.Graph = WithUnknownFields(g, 1006);
        proto.OpsetImport[0] = WithUnknownFields(proto.OpsetImport[0], 1007);
        var bytes = WithUnknownFields(proto, 1008).ToByteArray();
        File.WriteAllBytes(P("k2.onnx"), bytes);
        using (var m = Model.Load(P("k2.onnx")))
        {
            Assert.Contains(m.Metadata, kv => kv.Key == "purpose");
            Assert.Single(m.Functions);
            Assert.Equal("a model with a doc string", m.DocString);
            m.Save(P("k3.onnx"));
            // Also after an edit elsewhere in the graph.
            var relu = m.Graph.Nodes.Single(n => n.OpType == "Relu");
            relu.Name = "renamed_relu";
            m.Save(P("k4.onnx"));
        }
        Assert.Equal(bytes, File.ReadAllBytes(P("k3.onnx")));
        var edited = ModelProto.Parser.ParseFrom(File.ReadAllBytes(P("k4.onnx")));
        Assert.Equal("renamed_relu", edited.Graph.Node.Single(n => n.OpType == "Relu").Name);
        edited.Graph.Node.Single(n => n.OpType == "Relu").Name = proto.Graph.Node.Single(n => n.OpType == "Relu").Name;
        Assert.Equal(bytes, edited.ToByteArray()); // everything else, unknown fields included, as it was
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
