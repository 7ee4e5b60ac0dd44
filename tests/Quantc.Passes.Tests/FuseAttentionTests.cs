using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Models;
using Quantc.Onnx.Proto;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>fuse_attention and fuse_norm: the exporters' decomposed attention and norms become one ONNX Attention (opset 23) / RMSNormalization each, with the same function.</summary>
public sealed class FuseAttentionTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-fuse-attention");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Build(string arch, string flavor)
    {
        var path = Path.Combine(_dir.FullName, $"{arch}-{flavor}-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave(arch, "tiny", 0, flavor, path);
        return Model.Load(path);
    }

    private Model Fuse(Model m, out PassContext ctx, string passes = "[fuse_attention]")
    {
        ctx = TestCompiler.Compile(m, $"passes: {passes}").Context;
        foreach (var line in ctx.Log) log.WriteLine(line);
        var path = Path.Combine(_dir.FullName, $"fused-{Guid.NewGuid():N}.onnx");
        m.Save(path);
        return Model.Load(path);
    }

    private static Dictionary<string, float[]> Run(InferenceSession s, CalibrationSample sample) => OrtRuns.Outputs(s, sample);

    private static double MaxRelErr(float[] a, float[] b) => OrtRuns.MaxRelErr(a, b);

    /// <summary>
    /// Batch 2 of 12 new tokens after a 5-token cache, the second row left-padded by 3 (mask zeros): the
    /// padding mask, the cache, position ids and grouped-query heads all take part.
    /// </summary>
    private static CalibrationSample Batch(Graph g, int past, int kvHeads, int headSize)
    {
        const int B = 2, S = 12;
        var rng = new Random(5);
        var s = new CalibrationSample();
        s.Inputs["input_ids"] = (Enumerable.Range(0, B * S).Select(_ => (long)rng.Next(32, 120)).ToArray(), [B, S]);
        var mask = Enumerable.Repeat(1L, B * (past + S)).ToArray();
        for (int j = 0; j < 3; j++) mask[(past + S) + j] = 0;
        s.Inputs["attention_mask"] = (mask, [B, past + S]);
        if (g.Inputs.Any(i => i.Name == "position_ids"))
            s.Inputs["position_ids"] = (Enumerable.Range(0, B).SelectMany(b => Enumerable.Range(past, S).Select(p => (long)Math.Max(0, p - (b == 1 ? 3 : 0)))).ToArray(), [B, S]);
        foreach (var i in g.Inputs.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)))
            s.Inputs[i.Name] = (Enumerable.Range(0, B * kvHeads * past * headSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), [B, kvHeads, past, headSize]);
        return s;
    }

    [Theory]
    [InlineData("llama", 2, 32, "[fuse_attention]")]   // grouped-query: 4 query heads over 2 KV heads, repeat-kv in the graph
    [InlineData("opt", 4, 32, "[fuse_attention]")]     // multi-head, the scale folded into q_proj's output, no Mul on the scores
    [InlineData("llama", 2, 32, "[fuse_norm, fuse_rope, fuse_attention]")]   // what the recipes run: RoPE by position ids, 3-D Q/K/V
    public void TheFusedAttentionComputesTheSameOutputsAndCache(string arch, int kvHeads, int headSize, string passes)
    {
        using var original = Build(arch, "torch");
        using var m = Build(arch, "torch");
        int softmaxes = m.Graph.Nodes.Count(n => n.Is("Softmax"));
        using var fused = Fuse(m, out var ctx, passes);
        if (passes.Contains("fuse_rope", StringComparison.Ordinal))
        {
            Assert.Equal(2 * softmaxes, fused.Graph.Nodes.Count(n => n.Is("RotaryEmbedding")));
            Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Neg") || n.Is("Slice"));
            Assert.Contains($"fuse_rope: {2 * softmaxes} rotary embedding(s) → ONNX RotaryEmbedding (opset 23)", ctx.Log);
            // RoPE fused first, the head split goes too: Attention and RotaryEmbedding take the projections' 3-D tensors.
            Assert.Contains(ctx.Log, l => l.EndsWith($"{softmaxes} of them on the projections' [batch, sequence, heads·head size] tensors directly", StringComparison.Ordinal));
            Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Transpose"));
            Assert.All(fused.Graph.Nodes.Where(n => n.Is("RotaryEmbedding")), n => Assert.True(n.GetInt("num_heads", 0) > 0));
        }
        Assert.True(softmaxes > 0);
        Assert.Equal(softmaxes, fused.Graph.Nodes.Count(n => n.Is("Attention")));
        Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Softmax") || n.Is("Expand"));
        Assert.Equal(23, fused.OpsetVersion(""));
        Assert.Equal(original.Graph.Outputs.Select(o => o.Name), fused.Graph.Outputs.Select(o => o.Name));
        Assert.Contains(ctx.Log, l => l.Contains($"{softmaxes} attention block(s)", StringComparison.Ordinal));

        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(fused);
        foreach (int past in new[] { 0, 5 })
        {
            var sample = Batch(original.Graph, past, kvHeads, headSize);
            var oa = Run(a, sample);
            var ob = Run(b, sample);
            foreach (var (name, va) in oa)
            {
                // Left padding leaves row 1's first 3 positions with every key masked. The original then
                // softmaxes over finfo.min everywhere (a uniform average) and ONNX Attention does not; those
                // positions' outputs (and the later layers' cache entries there, which every real query masks
                // out) are never read, so they are left out. Everything else must match.
                double e = MaxRelErr(Unpadded(name, va, past), Unpadded(name, ob[name], past));
                if (name == "logits") log.WriteLine($"{arch} past {past}: logits max rel err {e:E2} (padded positions left out)");
                Assert.True(e <= 1e-5, $"{name} (past {past}): max relative error {e:E3}");
            }
        }
    }

    /// <summary>
    /// QuaRot's R3 (rotate_qk: an ai.quantc.Hadamard on the queries and keys after RoPE) no longer keeps the 4-D head split:
    /// the 3-D form runs the Hadamard between two Reshapes instead of two Transposes, with the same outputs and (rotated) cache
    /// as the eager attention of the same rotated model.
    /// </summary>
    [Fact]
    public void TheQueryAndKeyHadamardKeepsTheThreeDimensionalForm()
    {
        using var rotated = Fuse(Build("llama", "torch"), out _, "[rotate_qk, fuse_norm, fuse_rope]");
        using var fused = Fuse(Build("llama", "torch"), out var ctx, "[rotate_qk, fuse_norm, fuse_rope, fuse_attention]");
        int attentions = fused.Graph.Nodes.Count(n => n.Is("Attention"));
        Assert.True(attentions > 0);
        Assert.Contains(ctx.Log, l => l.EndsWith($"{attentions} of them on the projections' [batch, sequence, heads·head size] tensors directly",
            StringComparison.Ordinal));
        Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Transpose"));
        var hadamards = fused.Graph.Nodes.Where(n => n.Is("Hadamard", "ai.quantc")).ToList();
        Assert.Equal(2 * attentions, hadamards.Count);
        Assert.All(hadamards, h => Assert.True(h.Inputs[0]!.Producer!.Is("Reshape") && h.Output.Uses.Single().Node.Is("Reshape")));

        using var a = OrtModel.CreateSession(rotated);
        using var b = OrtModel.CreateSession(fused);
        foreach (int past in new[] { 0, 5 })
        {
            var sample = Batch(rotated.Graph, past, 2, 32);
            var oa = Run(a, sample);
            var ob = Run(b, sample);
            foreach (var (name, va) in oa)
            {
                double e = MaxRelErr(Unpadded(name, va, past), Unpadded(name, ob[name], past));  // as in the test above
                Assert.True(e <= 1e-5, $"{name} (past {past}): max relative error {e:E3}");
            }
        }
    }

    /// <summary>A copy with row 1's left-padded positions (the first 3 of the mask) zeroed: logits [2, 12, V], cache [2, h, past + 12, d].</summary>
    private static float[] Unpadded(string name, float[] x, int past)
    {
        var r = (float[])x.Clone();
        int half = r.Length / 2;                       // row 1 starts here
        if (name == "logits")
        {
            int per = half / 12;
            for (int s = 0; s < 12; s++) if (past + s < 3) Array.Clear(r, half + s * per, per);
        }
        else
        {
            int t = past + 12, d = 32, heads = half / (t * d);
            for (int h = 0; h < heads; h++) Array.Clear(r, half + h * t * d, 3 * d);
        }
        return r;
    }

    /// <summary>fuse_norm turns every decomposed RMSNorm (LLaMA's 2 per layer and the final one; Mamba's) into RMSNormalization, same outputs.</summary>
    [Theory]
    [InlineData("llama", 9)]
    [InlineData("mamba", 5)]
    public void FusedNormsComputeTheSameOutputs(string arch, int norms)
    {
        using var original = Build(arch, "torch");
        using var m = Build(arch, "torch");
        using var fused = Fuse(m, out var ctx, "[fold_norm, fuse_norm]");
        Assert.Equal(norms, fused.Graph.Nodes.Count(n => n.Is("RMSNormalization")));
        Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Pow") || n.Is("ReduceMean"));
        Assert.Contains($"fuse_norm: {norms} RMSNorm → RMSNormalization, 0 LayerNorm → LayerNormalization", ctx.Log);
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(fused);
        var tokens = DataLoaderTokens(original, 64);
        var sample = CalibrationInputs.FromTokens(original.Graph, tokens);
        var oa = Run(a, sample);
        var ob = Run(b, sample);
        foreach (var (name, va) in oa)
        {
            double e = MaxRelErr(va, ob[name]);
            if (name == "logits") log.WriteLine($"{arch}: fold_norm + fuse_norm logits max rel err {e:E2}");
            Assert.True(e <= 1e-5, $"{name}: max relative error {e:E3}");
        }
    }

    private static long[] DataLoaderTokens(Model m, int length) =>
        Quantc.Core.Data.DataLoader.Load(m, Path.Combine(AppContext.BaseDirectory, "eval.txt"), new Quantc.Core.Data.DataOptions { SplitDocuments = false, SequenceLength = length, MaxSamples = 1 }).Tokens![0];

    [Fact]
    public void ANormWhoseIntermediateIsReadElsewhereIsLeftWithTheReason()
    {
        using var m = Build("llama", "torch");
        var pow = m.Graph.Nodes.First(n => n.Is("Pow"));
        m.Graph.AddOutput(pow.Output);   // x² becomes a model output: the norm's inside is visible
        using var fused = Fuse(m, out var ctx, "[fuse_norm]");
        Assert.Contains(ctx.Log, l => l.StartsWith("fuse_norm: model.layers.0.input_layernorm left as it is: its intermediate", StringComparison.Ordinal));
        Assert.Equal(8, fused.Graph.Nodes.Count(n => n.Is("RMSNormalization")));
    }

    [Theory]
    [InlineData("llama", "ortgenai")]   // com.microsoft GroupQueryAttention already
    [InlineData("opt", "fused")]        // com.microsoft MultiHeadAttention already
    [InlineData("mamba", "torch")]      // no attention
    public void ModelsWithoutDecomposedAttentionAreLeftAsTheyAre(string arch, string flavor)
    {
        using var m = Build(arch, flavor);
        int nodes = m.Graph.Nodes.Count;
        long? opset = m.OpsetVersion("");
        using var fused = Fuse(m, out var ctx);
        Assert.Equal(nodes, fused.Graph.Nodes.Count);
        Assert.Equal(opset, fused.OpsetVersion(""));
        Assert.Contains("fuse_attention: no decomposed attention found", ctx.Log);
    }

    /// <summary>
    /// A one-attention model: Softmax(<paramref name="scores"/>(MatMul(q, Transpose(k)), graph)) · v, with q, v [1, 2, 4, 8]
    /// graph inputs and k = Reshape(k_in, [1, 2, 4, 8]) (computed this step, so its last axis is known to be one head).
    /// </summary>
    private static Model OneAttention(Func<Graph, Value, Func<long[], TypeProto>, Value> scores)
    {
        var m = Model.Create(opset: 21);
        var g = m.Graph;
        static TypeProto F(params long[] dims)
        {
            var t = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto() } };
            foreach (var d in dims) t.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            return t;
        }
        var q = g.AddInput("q", F(1, 2, 4, 8));
        var shape = g.AddInitializer(Tensor.FromValues<long>("k_shape", (int)TensorProto.Types.DataType.Int64, [4], [1L, 2, 4, 8]));
        var k = g.AddNode("Reshape", [g.AddInput("k_in", F(1, 2, 4, 8)), shape]).Output;
        var v = g.AddInput("v", F(1, 2, 4, 8));
        var kt = g.AddNode("Transpose", [k]);
        kt.SetAttribute("perm", new long[] { 0, 1, 3, 2 });
        var sm = g.AddNode("Softmax", [scores(g, g.AddNode("MatMul", [q, kt.Output]).Output, F)], name: "attn/Softmax");
        sm.SetAttribute("axis", -1L);
        g.AddOutput(g.AddNode("MatMul", [sm.Output, v], outputNames: ["y"]).Output);
        return m;
    }

    private static List<string> RunPass(Model m, IPass pass)
    {
        var ctx = new PassContext(m);
        pass.Run(ctx);
        return ctx.Log;
    }

    [Fact]
    public void AttentionScaledByARuntimeValueIsLeftWithTheReason()
    {
        using var m = OneAttention((g, qk, f) => g.AddNode("Mul", [qk, g.AddInput("scale", f([]))]).Output);
        var lines = RunPass(m, new FuseAttentionPass());
        Assert.Contains(lines, l => l == "fuse_attention: attn/Softmax left as it is: the scores are scaled by a non-constant");
        Assert.Contains(m.Graph.Nodes, n => n.Is("Softmax"));
        Assert.DoesNotContain(m.Graph.Nodes, n => n.Is("Attention"));
    }

    /// <summary>
    /// rotate_qk and fuse_attention share one matcher but not one acceptance: a mask added before the scale is an
    /// eager attention to rotate_qk (any order of scale and mask), not the form fuse_attention rewrites; scale then
    /// mask is both.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheMaskBeforeTheScaleIsAnAttentionToRotateQkButNotFused(bool scaleFirst)
    {
        Value Scores(Graph g, Value qk, Func<long[], TypeProto> f)
        {
            var mask = g.AddInput("mask", f([1, 1, 4, 4]));
            var c = g.AddInitializer(Tensor.FromFloats("c", [], [0.35f]));
            return scaleFirst ? g.AddNode("Add", [g.AddNode("Mul", [qk, c]).Output, mask]).Output
                : g.AddNode("Mul", [g.AddNode("Add", [qk, mask]).Output, c]).Output;
        }
        using var rotated = OneAttention(Scores);
        Assert.Contains(RunPass(rotated, new RotateQkPass(portable: true)), l => l.StartsWith("rotate_qk: ", StringComparison.Ordinal) && l.EndsWith("(eager): query and 1 key input(s) rotated by Hadamard 8 (MatMul)", StringComparison.Ordinal));
        using var fused = OneAttention(Scores);
        var lines = RunPass(fused, new FuseAttentionPass());
        if (scaleFirst)
        {
            var att = Assert.Single(fused.Graph.Nodes, n => n.Is("Attention"));
            Assert.Equal(0.35f, att.GetFloat("scale", 0));
            Assert.Equal(["q", "k_in", "v", "mask"], att.Inputs.Take(4).Select(i => i?.Producer is { } p && p.Is("Reshape") ? p.Inputs[0]!.Name : i?.Name));
        }
        else
        {
            Assert.Contains("fuse_attention: attn/Softmax left as it is: the scores are not a MatMul", lines);
            Assert.DoesNotContain(fused.Graph.Nodes, n => n.Is("Attention"));
        }
    }
}
