using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;
using Quantc.Models;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>Layer analysis of whole blocks (torch and ONNX Runtime GenAI flavors, hand-built and the reference models): layers, norms, wiring and names.</summary>
public class LayerAnalysisTests
{
    private static readonly string[] Projections =
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void DecoderBlockLayersNormsAndWiring(string flavor)
    {
        using var m = flavor == "torch" ? TorchBlock() : OrtGenAiBlock();
        var map = LayerAnalysis.Analyze(m.Graph);
        string attn = flavor == "torch" ? "self_attn" : "attn";
        var expected = Projections.Select(p => "model.layers.0." + p.Replace("self_attn", attn, StringComparison.Ordinal)).ToList();
        Assert.Equal(expected, map.Linears.Select(l => l.Name));
        Assert.Equal(["model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"], map.Norms.Select(n => n.Name));
        Assert.Equal(flavor == "torch" ? ["decomposed", "decomposed"] : ["SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"], map.Norms.Select(n => n.Form));
        Assert.Empty(map.Refusals);

        var (ln1, ln2) = (map.Norms[0], map.Norms[1]);
        LinearLayer L(string p) => map[$"model.layers.0.{p}"]!;
        Assert.Equal([L($"{attn}.q_proj"), L($"{attn}.k_proj"), L($"{attn}.v_proj")], ln1.Feeds);
        Assert.Equal([L("mlp.gate_proj"), L("mlp.up_proj")], ln2.Feeds);
        Assert.Null(L($"{attn}.o_proj").FedBy);
        Assert.Null(L("mlp.down_proj").FedBy);
        Assert.All(map.Linears, l => Assert.False(l.WeightIsOutByIn));
        Assert.Equal((Hidden, (long)Ffn), (L("mlp.up_proj").InFeatures, L("mlp.up_proj").OutFeatures));
        Assert.Equal((Ffn, (long)Hidden), (L("mlp.down_proj").InFeatures, L("mlp.down_proj").OutFeatures));

        // Groups: q/k/v share the first norm's output, gate/up the second's; o and down stand alone.
        Assert.Equal([3, 1, 2, 1], map.Groups.Select(g => g.Layers.Count));
        Assert.Same(ln1, map.Groups[0].FedBy);
        Assert.Same(ln2, map.Groups[2].FedBy);
        Assert.Same(map.Groups[2], map.GroupOf(L("mlp.up_proj")));
        Assert.Equal(3, map.Readers(ln1.Output).Count);
        Assert.Contains("fed by model.layers.0.input_layernorm", map.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheTorchBlockCarriesOnWhenTheNormIsInFloat16CastsAndTheLayerReadsThroughACast()
    {
        // x(fp16) → Cast → RMSNorm → Cast → γ·… → Cast → MatMul: the norm still feeds the layer (via the Cast).
        using var m = Model.Create(opset: 18);
        var g = m.Graph;
        var x = g.AddInput("x", Type(Onnx.Proto.TensorProto.Types.DataType.Float16, ActivationShape));
        var y = RmsNorm(g, x, "/norm", Gamma(g, "norm.weight", 1), new RmsSpelling { CastAround = true });
        var cast = g.AddNode("Cast", [y], name: "/fc/Cast");
        cast.SetAttribute("to", 1L);
        g.AddOutput(Linear(g, cast.Output, "/fc", "fc.weight", Hidden, 4, 2));
        var map = LayerAnalysis.Analyze(g);
        var norm = Assert.Single(map.Norms);
        Assert.Same(x, norm.Input);
        var fc = Assert.Single(map.Linears);
        Assert.Same(norm, fc.FedBy);
        Assert.Same(cast, fc.FedVia);
        Assert.Empty(map.Readers(norm.Output));     // Readers is direct only: passes that rewrite γ need that
    }

    [Fact]
    public void NamesComeFromParametersThenScopesThenNodes()
    {
        Assert.Equal("model.layers.0.self_attn.q_proj", LayerNames.FromParameter("model.layers.0.self_attn.q_proj.weight"));
        Assert.Equal("model.layers.0.attn.q_proj", LayerNames.FromParameter("model.layers.0.attn.q_proj.MatMul.weight"));
        Assert.Null(LayerNames.FromParameter("onnx::MatMul_1234"));
        Assert.Null(LayerNames.FromParameter("fc_w"));
        Assert.Equal("model.layers.0.mlp.down_proj", LayerNames.FromScope("/model/layers.0/mlp/down_proj/MatMul"));
        Assert.Null(LayerNames.FromScope("MatMul_3"));
        Assert.Null(LayerNames.FromScope("/MatMul_3"));
        Assert.False(LayerNames.IsMeaningful("val_12"));
        Assert.False(LayerNames.IsMeaningful("123"));
        Assert.False(LayerNames.IsMeaningful("const_fold_opt__7"));
        Assert.True(LayerNames.IsMeaningful("fc_w"));
        var taken = new HashSet<string>();
        Assert.Equal(["a", "a_1", "a_2"], new[] { "a", "a", "a" }.Select(n => LayerNames.Unique(n, taken)));

        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var tied = Init(g, "lm_head.weight", [Hidden, Hidden], 1);
        var a = g.AddNode("MatMul", [x, tied], name: "MatMul_0");
        var b = g.AddNode("MatMul", [a.Output, tied], name: "MatMul_1");
        var c = g.AddNode("MatMul", [b.Output, Init(g, "fc_w", [Hidden, 4], 2)], name: "MatMul_2");
        var d = g.AddNode("MatMul", [c.Output, Init(g, "onnx::MatMul_9", [4, 4], 3)], name: "head");
        g.AddOutput(d.Output);
        Assert.Equal(["lm_head", "lm_head_1", "fc_w", "head"], LayerAnalysis.Analyze(g).Linears.Select(l => l.Name));
    }

    [Theory]
    [InlineData("torch", "decomposed")]
    [InlineData("ortgenai", "SimplifiedLayerNormalization")]
    public void ReferenceLlamaLayersAndTheirNormsAreRecognisedInBothFlavors(string flavor, string firstNormForm)
    {
        using var m = ReferenceModels.Build("llama", "tiny", 0, flavor);
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(4 * 7 + 1, map.Linears.Count); // 4 layers × (q, k, v, o, gate, up, down) + lm_head
        Assert.Equal(4 * 2 + 1, map.Norms.Count);
        Assert.Equal(firstNormForm, map.Norms[0].Form);
        Assert.All(map.Norms, n => Assert.Equal(NormKind.RmsNorm, n.Kind));
        foreach (var proj in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Equal("model.layers.2.input_layernorm", map[$"model.layers.2.self_attn.{proj}"]!.FedBy!.Name);
        foreach (var proj in new[] { "gate_proj", "up_proj" })
            Assert.Equal("model.layers.2.post_attention_layernorm", map[$"model.layers.2.mlp.{proj}"]!.FedBy!.Name);
        Assert.Null(map["model.layers.2.mlp.down_proj"]!.FedBy);
        Assert.Null(map["model.layers.2.self_attn.o_proj"]!.FedBy);
        Assert.Equal("model.norm", map["lm_head"]!.FedBy!.Name);
        var q = map["model.layers.0.self_attn.q_proj"]!;
        Assert.Equal(3, map.Readers(q.Input).Count);
        Assert.Equal(128, q.InFeatures);
        if (flavor == "torch") Assert.Equal(1e-5f, map.Norms[0].Epsilon, 7);
        // Attention's Q·Kᵀ and P·V are activation products: not layers, and nothing to explain.
        Assert.Empty(map.Refusals);
    }

    /// <summary>
    /// Qwen2's variant: q/k/v with biases, and the head tied to the input embedding — read through a Transpose, as torch
    /// exports it — is the linear layer lm_head whose weight is the embedding table, stored [out, in], read at the Transpose.
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void Qwen2BiasesAndTheTiedHeadAreRecognised(string flavor)
    {
        using var m = ReferenceModels.Build("qwen2", "tiny", 0, flavor);
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(4 * 7 + 1, map.Linears.Count);
        foreach (var proj in new[] { "q_proj", "k_proj", "v_proj" })
        {
            var l = map[$"model.layers.1.self_attn.{proj}"]!;
            Assert.Equal("MatMul+Add", l.Form);
            Assert.Equal($"model.layers.1.self_attn.{proj}.bias", l.Bias!.Name);
        }
        var head = map["lm_head"]!;
        Assert.Equal("Transpose+MatMul", head.Form);
        Assert.Equal("model.embed_tokens.weight", head.Weight.Name);
        Assert.True(head.WeightIsOutByIn);
        Assert.Equal((128L, 257L), (head.InFeatures, head.OutFeatures));
        Assert.True(head.WeightTranspose!.Is("Transpose"));
        Assert.Equal(new Use(head.WeightTranspose, 0), head.WeightUse);
        Assert.Equal("model.norm", head.FedBy!.Name);
        Assert.Empty(map.Refusals);
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("fused")]
    public void ReferenceOptLayerNormsAndBiasesAreRecognised(string flavor)
    {
        using var m = ReferenceModels.Build("opt", "tiny", 0, flavor);
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(4 * 2 + 1, map.Norms.Count);
        Assert.Equal(4 * 6 + 1, map.Linears.Count);
        Assert.All(map.Norms, n => Assert.Equal(NormKind.LayerNorm, n.Kind));
        Assert.All(map.Norms, n => Assert.NotNull(n.Beta));
        var fc1 = map["model.decoder.layers.0.fc1"]!;
        Assert.NotNull(fc1.Bias);
        Assert.NotNull(fc1.BiasAdd);
        Assert.Equal("model.decoder.layers.0.final_layer_norm", fc1.FedBy!.Name);
        Assert.Same(fc1.BiasAdd!.Output, fc1.Output);
        for (int i = 0; i < 4; i++)
        {
            foreach (var proj in new[] { "q_proj", "k_proj", "v_proj" })
                Assert.Equal($"model.decoder.layers.{i}.self_attn_layer_norm", map[$"model.decoder.layers.{i}.self_attn.{proj}"]!.FedBy!.Name);
            Assert.Equal($"model.decoder.layers.{i}.final_layer_norm", map[$"model.decoder.layers.{i}.fc1"]!.FedBy!.Name);
            Assert.Equal(3, map.Norm($"model.decoder.layers.{i}.self_attn_layer_norm")!.Feeds.Count);
        }
        Assert.Equal("model.decoder.final_layer_norm", map["lm_head"]!.FedBy!.Name);
        Assert.Empty(map.Refusals);
        if (flavor == "fused")
        {
            // The embedding sum's norm is LayerNormalization; every later one is a SkipLayerNormalization whose
            // skip is the residual stream and whose input is the previous projection (its bias fused in the norm).
            Assert.Equal("LayerNormalization", map.Norms[0].Form);
            Assert.Null(map.Norms[0].Skip);
            Assert.All(map.Norms.Skip(1), n => Assert.Equal("SkipLayerNormalization", n.Form));
            Assert.All(map.Norms.Skip(1), n => Assert.NotNull(n.Skip));
            var mlpNorm = map.Norm("model.decoder.layers.1.final_layer_norm")!;
            Assert.Equal("model.decoder.layers.1.final_layer_norm.bias", mlpNorm.Beta!.Name);
            Assert.Same(map["model.decoder.layers.1.self_attn.out_proj"]!.Output, mlpNorm.Input);
            Assert.Equal(1e-5f, mlpNorm.Epsilon);
            Assert.Null(map["model.decoder.layers.1.self_attn.out_proj"]!.Bias);
            Assert.Null(map["model.decoder.layers.1.fc2"]!.Bias);
        }
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void TheBlocksAreValidModelsThatOnnxRuntimeRuns(string flavor)
    {
        using var m = flavor == "torch" ? TorchBlock() : OrtGenAiBlock();
        var x = Random(2 * 3 * Hidden, 42, 1f);
        var y = RunOrt(m, "hidden_states", x, ActivationShape);
        var expected = BlockRef(m.Graph, x, genai: flavor != "torch");
        Assert.Equal(expected.Length, y.Length);
        for (int i = 0; i < y.Length; i++) Assert.True(Math.Abs(expected[i] - y[i]) <= 1e-4f * (1 + Math.Abs(expected[i])), $"element {i}: {y[i]} vs {expected[i]}");
    }
}
