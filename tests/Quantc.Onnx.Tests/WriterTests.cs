using System.Security.Cryptography;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx.Tests;

/// <summary>Round trips of IR-built models through ONNX Runtime, determinism, atomicity, and what must survive a load/save.</summary>
public sealed class WriterTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-writer");

    public void Dispose() => _dir.Delete(recursive: true);

    private string P(string name) => Path.Combine(_dir.FullName, name);

    private static TypeProto T(int elem, params long[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims) s.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elem, Shape = s } };
    }

    /// <summary>MatMul → Add → Relu → Gemm → Reshape, a Constant, and an If whose branches capture an outer value.</summary>
    private static Model Build()
    {
        var m = Model.Create(opset: 21);
        var g = m.Graph;
        var rng = new Random(9);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var x = g.AddInput("x", T(1, 3, 64));
        var flag = g.AddInput("flag", T(9));
        var mm = g.AddNode("MatMul", [x, g.AddInitializer(Tensor.FromFloats("w1", [64, 512], R(64 * 512)))]);   // 128 KiB: external with a small threshold
        var add = g.AddNode("Add", [mm.Output, g.AddInitializer(Tensor.FromFloats("b1", [512], R(512)))]);
        var relu = g.AddNode("Relu", [add.Output]);
        var gemm = g.AddNode("Gemm", [relu.Output, g.AddInitializer(Tensor.FromFloats("w2", [16, 512], R(16 * 512))), g.AddInitializer(Tensor.FromFloats("b2", [16], R(16)))]);
        gemm.SetAttribute("transB", 1L);
        var shapeConst = g.AddNode("Constant", [], outputNames: ["shape"]);
        shapeConst.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = ConstTensor() });
        var reshaped = g.AddNode("Reshape", [gemm.Output, shapeConst.Output]);
        var iff = g.AddNode("If", [flag], outputNames: ["y"]);
        foreach (var (branch, op) in new[] { ("then_branch", "Neg"), ("else_branch", "Abs") })
        {
            var body = iff.SetSubgraph(branch, branch);
            var o = body.AddNode(op, [reshaped.Output], outputNames: [branch + "_out"]); // captures an outer value
            body.AddOutput(o.Output);
        }
        g.AddOutput(iff.Output);
        m.SetMetadata("purpose", "writer test");
        m.DocString = "a model with a doc string";
        return m;
    }

    private static TensorProto ConstTensor()
    {
        var t = new TensorProto { DataType = 7 };
        t.Dims.Add(2);
        t.Int64Data.Add([3, 16]);
        return t;
    }

    private static float[] Run(string path, bool flag)
    {
        using var s = new InferenceSession(path);
        var x = Enumerable.Range(0, 3 * 64).Select(i => MathF.Sin(i)).ToArray();
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [3, 64]);
        using var fv = OrtValue.CreateTensorValueFromMemory(new[] { flag }, []);
        using var ro = new RunOptions();
        using var o = s.Run(ro, ["x", "flag"], [xv, fv], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Theory]
    [InlineData(long.MaxValue)]  // everything inline
    [InlineData(1024L)]          // large tensors external
    public void IrBuiltModelsRoundTripBitIdenticalInOnnxRuntime(long threshold)
    {
        using (var m = Build()) m.Save(P("a.onnx"), new OnnxWriteOptions { ExternalDataThreshold = threshold });
        Assert.Equal(threshold != long.MaxValue, File.Exists(P("a.onnx.data")));
        using (var m = Model.Load(P("a.onnx")))
        {
            m.Graph.Validate();
            m.Save(P("sub/b.onnx"), new OnnxWriteOptions { ExternalDataThreshold = threshold }); // mapped tensors re-saved to a new folder
        }
        foreach (bool flag in new[] { true, false })
        {
            var a = Run(P("a.onnx"), flag);
            var b = Run(P("sub/b.onnx"), flag);
            Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), b.Select(BitConverter.SingleToInt32Bits));
        }
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
        using (var m = Build()) m.Save(P("in.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        string h1 = Hash(P("in.onnx")), d1 = Hash(P("in.onnx.data"));
        var before = Run(P("in.onnx"), true);
        using (var m = Model.Load(P("in.onnx")))
        {
            m.Save(P("elsewhere.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
            Assert.Equal(h1, Hash(P("in.onnx")));
            Assert.Equal(d1, Hash(P("in.onnx.data")));
            // Saving over the file the model is mapped from: temporaries, then rename; the mapping keeps the old bytes alive.
            m.Save(P("in.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        }
        Assert.Equal(before, Run(P("in.onnx"), true));
        Assert.Empty(Directory.GetFiles(_dir.FullName, ".*tmp*"));
    }

    private sealed class FailingData(long length) : TensorData
    {
        public override long Length => length;
        public override ReadOnlySpan<byte> Slice(long offset, int len) => new byte[len];
        public override void CopyTo(Stream destination)
        {
            destination.Write(new byte[length / 2]);
            throw new IOException("disk full (simulated)");
        }
    }

    [Fact]
    public void AFailedWriteLeavesNothingHalfWritten()
    {
        using (var ok = Build()) ok.Save(P("dest.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 });
        string h = Hash(P("dest.onnx")), d = Hash(P("dest.onnx.data"));
        using var m = Build();
        m.Graph.SetInitializer(m.Graph["w1"], Tensor.FromData("w1", 1, [64, 512], new FailingData(64 * 512 * 4)));
        Assert.Throws<IOException>(() => m.Save(P("dest.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 }));
        Assert.Equal(h, Hash(P("dest.onnx")));       // the previous model is untouched
        Assert.Equal(d, Hash(P("dest.onnx.data")));
        Assert.Empty(Directory.GetFiles(_dir.FullName, ".*tmp*"));
        Assert.Throws<IOException>(() => m.Save(P("fresh.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024 }));
        Assert.False(File.Exists(P("fresh.onnx")));
        Assert.False(File.Exists(P("fresh.onnx.data")));
    }

    [Fact]
    public void UnknownFieldsMetadataDocStringsAndFunctionsSurvive()
    {
        using (var m = Build()) m.Save(P("k.onnx"));
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(P("k.onnx")));
        proto.Functions.Add(new FunctionProto { Name = "f", Domain = "custom", DocString = "a function" });
        proto.Graph.Node[0].DocString = "node doc";
        var bytes = proto.ToByteArray();
        // Append an unknown field (number 99, varint 42) to the model: it must come back.
        bytes = [.. bytes, (99 << 3) & 0x7F | 0x80, (99 << 3) >> 7, 42];
        File.WriteAllBytes(P("k2.onnx"), bytes);
        using (var m = Model.Load(P("k2.onnx")))
        {
            Assert.Contains(m.Metadata, kv => kv.Key == "purpose");
            Assert.Single(m.Functions);
            m.Save(P("k3.onnx"));
        }
        Assert.Equal(bytes, File.ReadAllBytes(P("k3.onnx")));
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
