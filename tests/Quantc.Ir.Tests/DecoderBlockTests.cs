using Quantc.Ir.Analysis;

namespace Quantc.Ir.Tests;

/// <summary>The model map's decoder blocks (block-wise reconstruction's structure) on the committed reference models.</summary>
public class DecoderBlockTests
{
    private static Model Committed(string file)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string f = Path.Combine(d.FullName, "models", file);
            if (File.Exists(f)) return Model.Load(f);
        }
        throw new FileNotFoundException("models/" + file);
    }

    [Fact]
    public void TheTinyLlamaIsAChainOfLlamaBlocks()
    {
        using var m = Committed("tiny-llama.onnx");
        var map = LayerAnalysis.Analyze(m.Graph);
        var blocks = map.DecoderBlocksOf(out var why);
        Assert.True(blocks is not null, why);
        int layers = map.Linears.Count(l => l.Name.EndsWith("v_proj", StringComparison.Ordinal));
        Assert.Equal(layers, blocks.Count);
        for (int i = 0; i < blocks.Count; i++)
        {
            var b = blocks[i];
            Assert.Equal($"model.layers.{i}", b.Name);
            Assert.Equal(i, b.Index);
            string[] roles = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj"];
            Assert.Equal(roles.Select(r => $"model.layers.{i}.{r}"), b.Linears.Select(l => l.Name));
            Assert.Equal($"model.layers.{i}.input_layernorm", b.AttentionNorm.Name);
            Assert.Equal($"model.layers.{i}.post_attention_layernorm", b.MlpNorm.Name);
            Assert.Equal(32, b.HeadDim);
            Assert.Equal(b.Q.OutFeatures, b.Heads * b.HeadDim);
            Assert.Equal(b.K.OutFeatures, b.KvHeads * b.HeadDim);
            Assert.Same(b.QueryRope.CosTable, b.KeyRope.CosTable);
            if (i > 0) Assert.Same(blocks[i - 1].Output, b.Input);
        }
        Assert.Equal("/model/embed_tokens/Gather", blocks[0].Input.Producer!.Name);
        Assert.Contains(map.Norms, n => ReferenceEquals(n.Input, blocks[^1].Output));   // the final norm reads the last block
    }

    [Theory]
    [InlineData("tiny-opt.onnx", "LayerNorm (OPT-style)")]
    [InlineData("tiny-mamba.onnx", "Mamba mixers")]
    [InlineData("tiny-llama-ortgenai.onnx", "is a fused GroupQueryAttention op")]
    public void OtherArchitecturesAreRefusedWithTheReason(string file, string reason)
    {
        using var m = Committed(file);
        Assert.Null(LayerAnalysis.Analyze(m.Graph).DecoderBlocksOf(out var why));
        Assert.Contains(reason, why, StringComparison.Ordinal);
    }

    [Fact]
    public void AGeluMlpIsRefused()
    {
        using var m = Committed("tiny-llama.onnx");
        var sigmoid = m.Graph.Nodes.First(n => n.Is("Sigmoid"));
        sigmoid.OpType = "Tanh";
        var blocks = LayerAnalysis.Analyze(m.Graph).DecoderBlocksOf(out var why);
        Assert.Null(blocks);
        Assert.Contains("is not down(silu(gate) · up)", why, StringComparison.Ordinal);
    }
}
