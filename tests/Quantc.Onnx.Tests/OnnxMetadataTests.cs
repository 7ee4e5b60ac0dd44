using Google.Protobuf;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx.Tests;

/// <summary>OnnxMetadata reads metadata_props by walking the top-level fields, skipping the graph: the same pairs as a full parse,
/// wherever the field sits; a truncated or corrupt file is a BadInputException.</summary>
public sealed class OnnxMetadataTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-metadata");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(ModelProto m, string name)
    {
        string path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    private static ModelProto WithGraph()
    {
        var m = new ModelProto { IrVersion = 10, ProducerName = "test", ModelVersion = 3, Graph = new GraphProto { Name = "g" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        var w = new TensorProto { Name = "W", DataType = 1, RawData = ByteString.CopyFrom(new byte[1 << 20]) };
        w.Dims.Add(1 << 18);
        m.Graph.Initializer.Add(w);
        m.Graph.Output.Add(new ValueInfoProto { Name = "W" });
        return m;
    }

    [Fact]
    public void ReadsThePairsWithoutTheGraph()
    {
        var m = WithGraph();
        m.MetadataProps.Add(new StringStringEntryProto { Key = "quantc.prefix_tokens", Value = "1,13" });
        m.MetadataProps.Add(new StringStringEntryProto { Key = "other", Value = "ü ✓" });
        string path = Write(m, "m.onnx");
        Assert.Equal(m.MetadataProps.Select(p => KeyValuePair.Create(p.Key, p.Value)), OnnxMetadata.Read(path));
        Assert.Empty(OnnxMetadata.Read(Write(WithGraph(), "none.onnx")));
    }

    [Fact]
    public void TruncatedOrCorruptFilesAreBadInput()
    {
        var m = WithGraph();
        m.MetadataProps.Add(new StringStringEntryProto { Key = "k", Value = "v" });
        byte[] bytes = m.ToByteArray();
        foreach (int cut in new[] { 1, 7, bytes.Length / 2, bytes.Length - 3 })
        {
            string path = Path.Combine(_dir.FullName, $"cut{cut}.onnx");
            File.WriteAllBytes(path, bytes[..cut]);
            var e = Assert.Throws<BadInputException>(() => OnnxMetadata.Read(path));
            Assert.Contains("not a valid ONNX model", e.Message);
        }
        string bad = Path.Combine(_dir.FullName, "wire.onnx");
        File.WriteAllBytes(bad, [0x0F, 0x01]);  // wire type 7
        Assert.Throws<BadInputException>(() => OnnxMetadata.Read(bad));
    }
}
