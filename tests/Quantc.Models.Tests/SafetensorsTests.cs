using System.Runtime.InteropServices;
using System.Text;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Models.Tests;

public sealed class SafetensorsTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-st-");

    public void Dispose() => _dir.Delete(true);

    private string P(string name) => Path.Combine(_dir.FullName, name);

    private static bool IsLinear(string name) =>
        name.EndsWith("proj.weight", StringComparison.Ordinal) || name.EndsWith(".fc1.weight", StringComparison.Ordinal) ||
        name.EndsWith(".fc2.weight", StringComparison.Ordinal) || name == "lm_head.weight";

    /// <summary>The weights of a built synthetic model in Hugging Face layout ([out, in] linears), as float32.</summary>
    private static List<(string Name, long[] Shape, float[] Values)> HfTensors(Model m)
    {
        var list = new List<(string, long[], float[])>();
        foreach (var v in m.Graph.Initializers)
        {
            if (v.Name.StartsWith("val_", StringComparison.Ordinal) || v.Name.Contains("rotary", StringComparison.Ordinal) || v.Name.Contains("_cache", StringComparison.Ordinal)) continue;
            var t = v.Initializer!;
            var x = t.ToFloat32();
            if (IsLinear(v.Name))
            {
                long rows = t.Dims[0], cols = t.Dims[1];
                var y = new float[x.Length];
                for (long r = 0; r < rows; r++) for (long c = 0; c < cols; c++) y[c * rows + r] = x[r * cols + c];
                list.Add((v.Name, [cols, rows], y));
            }
            else list.Add((v.Name, t.Dims, x));
        }
        return list;
    }

    private string Config(Model m)
    {
        string path = P("config.json");
        File.WriteAllText(path, m.Metadata.Single(kv => kv.Key == "quantc.config").Value);
        return path;
    }

    [Fact]
    public void RoundTripsF32F16Bf16()
    {
        float[] values = [0f, 1f, -2.5f, 3.140625f, 65504f, 1e-3f];
        SafetensorsWriter.Write(P("a.safetensors"),
        [
            ("f32", SafetensorsDType.F32, [2, 3], SafetensorsWriter.Encode(values, SafetensorsDType.F32)),
            ("f16", SafetensorsDType.F16, [6], SafetensorsWriter.Encode(values, SafetensorsDType.F16)),
            ("bf16", SafetensorsDType.BF16, [3, 2], SafetensorsWriter.Encode(values, SafetensorsDType.BF16)),
        ], new Dictionary<string, string> { ["format"] = "pt" });
        using var ck = SafetensorsCheckpoint.Open(P("a.safetensors"));
        Assert.Equal("pt", ck.Metadata["format"]);
        Assert.Equal([2L, 3], ck.Get("f32").Shape);
        Assert.Equal(values, MemoryMarshal.Cast<byte, float>(ck.Get("f32").Data.Span).ToArray());
        var w = new CheckpointWeights(ck, "none");
        Assert.Equal(values.Select(v => (float)(Half)v), w.Get("f16", [6]).ToFloat32());
        var bf = w.Get("bf16", [3, 2]).ToFloat32();
        for (int i = 0; i < values.Length; i++) Assert.Equal(values[i], bf[i], Math.Abs(values[i]) / 128 + 1e-6);
    }

    [Fact]
    public void ShardedF32CheckpointRebuildsTheSameLlama()
    {
        using var synthetic = ReferenceModels.Build("llama", "tiny", 3, "torch");
        var tensors = HfTensors(synthetic);
        // Two shards and an index, as Hugging Face writes them.
        var half = tensors.Count / 2;
        var shards = new[] { tensors.Take(half).ToList(), tensors.Skip(half).ToList() };
        var map = new Dictionary<string, string>();
        for (int s = 0; s < 2; s++)
        {
            string file = $"model-0000{s + 1}-of-00002.safetensors";
            SafetensorsWriter.Write(P(file), shards[s].Select(t => (t.Name, SafetensorsDType.F32, t.Shape, SafetensorsWriter.Encode(t.Values, SafetensorsDType.F32))));
            foreach (var t in shards[s]) map[t.Name] = file;
        }
        File.WriteAllText(P("model.safetensors.index.json"), System.Text.Json.JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
        using var cm = ReferenceModels.BuildFromCheckpoint("llama", Config(synthetic), P("model.safetensors.index.json"), "torch");
        // Same weights, bit for bit.
        foreach (var v in synthetic.Graph.Initializers.Where(v => v.Name.Contains("layers.1.", StringComparison.Ordinal)))
            Assert.Equal(v.Initializer!.ToFloat32(), cm.Model.Graph[v.Name].Initializer!.ToFloat32());
        using var a = new Decoder(synthetic);
        using var b = new Decoder(cm.Model);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        Assert.Equal(a.Run(ids, only: ["logits"])["logits"].Data, b.Run(ids, only: ["logits"])["logits"].Data);
        // And it saves (weights converted while writing) and loads back.
        var r = cm.Model.Save(P("from-ckpt.onnx"));
        using var loaded = Model.Load(r.ModelPath);
        using var c = new Decoder(loaded);
        Assert.Equal(a.Run(ids, only: ["logits"])["logits"].Data, c.Run(ids, only: ["logits"])["logits"].Data);
    }

    /// <summary>An OPT checkpoint fills the fused flavor too: every weight bit-identical, logits equal to the torch flavor's (rtol 1e-4).</summary>
    [Fact]
    public void OptCheckpointBuildsTheFusedFlavor()
    {
        using var synthetic = ReferenceModels.Build("opt", "tiny", 2, "torch");
        SafetensorsWriter.Write(P("opt.safetensors"), HfTensors(synthetic).Select(t => (t.Name, SafetensorsDType.F32, t.Shape, SafetensorsWriter.Encode(t.Values, SafetensorsDType.F32))));
        using var cm = ReferenceModels.BuildFromCheckpoint("opt", Config(synthetic), P("opt.safetensors"), "fused");
        Assert.Contains(cm.Model.Graph.Nodes, n => n.OpType == "SkipLayerNormalization");
        foreach (var v in synthetic.Graph.Initializers.Where(v => v.Name.StartsWith("model.", StringComparison.Ordinal) || v.Name == "lm_head.weight"))
            Assert.Equal(v.Initializer!.ToFloat32(), cm.Model.Graph[v.Name].Initializer!.ToFloat32());
        using var a = new Decoder(synthetic);
        using var b = new Decoder(cm.Model);
        var ids = LlamaTests.Tokens(LlamaTests.Sample);
        var la = a.Run(ids, only: ["logits"])["logits"].Data;
        LlamaTests.AssertClose(la, b.Run(ids, only: ["logits"])["logits"].Data, 1e-4, 1e-5 * la.Max(Math.Abs), "opt checkpoint: fused vs torch logits");
    }

    [Theory]
    [InlineData("mamba", SafetensorsDType.BF16)]
    [InlineData("opt", SafetensorsDType.F16)]
    [InlineData("llama", SafetensorsDType.BF16)]
    public void HalfPrecisionCheckpointsLoad(string arch, SafetensorsDType dtype)
    {
        using var synthetic = ReferenceModels.Build(arch, "tiny", 1, "torch");
        var tensors = HfTensors(synthetic).Where(t => t.Name != "lm_head.weight" || arch != "mamba").ToList(); // mamba: tied lm_head
        SafetensorsWriter.Write(P("model.safetensors"), tensors.Select(t => (t.Name, dtype, t.Shape, SafetensorsWriter.Encode(t.Values, dtype))));
        using var cm = ReferenceModels.BuildFromCheckpoint(arch, Config(synthetic), P("model.safetensors"));
        using var d = new Decoder(cm.Model);
        var logits = d.Run(LlamaTests.Tokens("Half precision.\n"), only: ["logits"])["logits"];
        Assert.All(logits.Data, x => Assert.True(float.IsFinite(x)));
        // Converted values are the rounded originals, transposed back to [in, out].
        var name = arch switch { "mamba" => "backbone.layers.0.mixer.in_proj.weight", "opt" => "model.decoder.layers.0.fc1.weight", _ => "model.layers.0.mlp.up_proj.weight" };
        var original = synthetic.Graph[name].Initializer!.ToFloat32();
        var converted = cm.Model.Graph[name].Initializer!.ToFloat32();
        var rounded = dtype == SafetensorsDType.F16 ? original.Select(v => (float)(Half)v).ToArray()
            : MemoryMarshal.Cast<byte, ushort>(SafetensorsWriter.Encode(original, dtype)).ToArray().Select(u => BitConverter.Int32BitsToSingle(u << 16)).ToArray();
        Assert.Equal(rounded, converted);
        if (arch == "mamba")   // tied: lm_head is the embedding, transposed
        {
            var emb = synthetic.Graph["backbone.embeddings.weight"].Initializer!;
            var head = cm.Model.Graph["lm_head.weight"].Initializer!.ToFloat32();
            Assert.Equal([emb.Dims[1], emb.Dims[0]], cm.Model.Graph["lm_head.weight"].Initializer!.Dims);
            var e = emb.ToFloat32();
            Assert.Equal(BitConverter.Int32BitsToSingle(MemoryMarshal.Cast<byte, ushort>(SafetensorsWriter.Encode([e[5 * emb.Dims[1] + 7]], dtype))[0] << 16), head[7 * emb.Dims[0] + 5]);
        }
    }

    [Fact]
    public void MissingOrMisShapedTensorsAreClearErrors()
    {
        using var synthetic = ReferenceModels.Build("llama", "tiny", 0, "torch");
        var tensors = HfTensors(synthetic);
        string config = Config(synthetic);
        SafetensorsWriter.Write(P("missing.safetensors"), tensors.Where(t => t.Name != "model.layers.2.mlp.up_proj.weight")
            .Select(t => (t.Name, SafetensorsDType.F32, t.Shape, SafetensorsWriter.Encode(t.Values, SafetensorsDType.F32))));
        var e1 = Assert.Throws<BadInputException>(() => ReferenceModels.BuildFromCheckpoint("llama", config, P("missing.safetensors")).Dispose());
        Assert.Contains("'model.layers.2.mlp.up_proj.weight'", e1.Message);

        SafetensorsWriter.Write(P("shape.safetensors"), tensors.Select(t => t.Name == "model.layers.1.self_attn.k_proj.weight"
            ? (t.Name, SafetensorsDType.F32, new long[] { 32, 128 }, SafetensorsWriter.Encode(t.Values.AsSpan(0, 32 * 128), SafetensorsDType.F32))
            : (t.Name, SafetensorsDType.F32, t.Shape, SafetensorsWriter.Encode(t.Values, SafetensorsDType.F32))));
        var e2 = Assert.Throws<BadInputException>(() => ReferenceModels.BuildFromCheckpoint("llama", config, P("shape.safetensors")).Dispose());
        Assert.Contains("'model.layers.1.self_attn.k_proj.weight' has shape [32, 128], the config needs [64, 128]", e2.Message);
    }

    [Fact]
    public void CorruptFilesAreClearErrors()
    {
        SafetensorsWriter.Write(P("ok.safetensors"), [("x", SafetensorsDType.F32, [4], new byte[16])]);
        var bytes = File.ReadAllBytes(P("ok.safetensors"));
        File.WriteAllBytes(P("truncated.safetensors"), bytes[..^4]);
        Assert.Contains("outside the file", Assert.Throws<BadInputException>(() => SafetensorsCheckpoint.Open(P("truncated.safetensors"))).Message);
        File.WriteAllBytes(P("garbage.safetensors"), Encoding.ASCII.GetBytes("this is not a checkpoint at all"));
        Assert.Contains("header length", Assert.Throws<BadInputException>(() => SafetensorsCheckpoint.Open(P("garbage.safetensors"))).Message);
        SafetensorsWriter.Write(P("int.safetensors"), [("x", SafetensorsDType.F32, [4], new byte[16])]);
        var text = File.ReadAllBytes(P("int.safetensors"));
        var s = Encoding.ASCII.GetString(text).Replace("\"F32\"", "\"I64\"");
        File.WriteAllBytes(P("int.safetensors"), Encoding.ASCII.GetBytes(s));
        Assert.Contains("dtype I64", Assert.Throws<BadInputException>(() => SafetensorsCheckpoint.Open(P("int.safetensors"))).Message);
        Assert.Contains("not found", Assert.Throws<BadInputException>(() => SafetensorsCheckpoint.Open(P("nope.safetensors"))).Message);
    }
}
