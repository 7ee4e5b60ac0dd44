using System.Text;
using System.Text.Json.Nodes;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Genai;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Passes;

namespace Quantc.Genai.Tests;

/// <summary>GenAI folders of the tiny reference models: the derived config, the byte-level tokenizer, and ONNX Runtime GenAI's greedy
/// generation against a plain ONNX Runtime greedy loop on the same model file.</summary>
public sealed class GenaiTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-genai-");

    public void Dispose() => _dir.Delete(recursive: true);

    private const string StoredInt8 = "passes: [{quantize_kv: {storage: native, bits: 8}}]";
    private const string StoredInt4 = "passes: [{quantize_kv: {storage: native, bits: 4}}]";
    private const string StoredCausal =
        "passes: [fuse_norm, fuse_rope, fuse_attention, lower_attention, {quantize_kv: {storage: native, bits: 8}}]";
    private const string StoredCausal4 =
        "passes: [fuse_norm, fuse_rope, fuse_attention, lower_attention, {quantize_kv: {storage: native, bits: 4}}]";

    private static string Bundled(string name) => Path.Combine(AppContext.BaseDirectory, name);

    /// <summary>Writes the model at <paramref name="source"/> as a GenAI folder, compiled with
    /// <paramref name="recipe"/> first unless null.</summary>
    private string Folder(string source, string? recipe)
    {
        string tag = recipe is null ? "fp32" : Builtins.Recipes.ContainsKey(recipe) ? recipe : $"yaml{(uint)recipe.GetHashCode():x8}";
        string dir = Path.Combine(_dir.FullName, $"{Path.GetFileNameWithoutExtension(source)}.{tag}");
        Directory.CreateDirectory(dir);
        using var m = Model.Load(source);
        var folder = GenaiFolder.Plan(m, source);
        if (recipe is not null)
        {
            var calib = DataLoader.Load(m, Bundled("calib.txt"), new DataOptions { SequenceLength = 64, MaxSamples = 4 });
            var r = Builtins.Recipes.ContainsKey(recipe) ? Builtins.Recipe(recipe) : Quantc.Core.Pipeline.Recipe.Parse(recipe, "test recipe");
            using var _ = new Compiler(Builtins.Passes()).Compile(m, r, new CompileOptions { Calibration = calib });
        }
        m.Save(Path.Combine(dir, GenaiFolder.ModelFile));
        folder.Write(m, f => Path.Combine(dir, f));
        return dir;
    }

    [Theory]
    [InlineData("tiny-llama.onnx", null)]
    [InlineData("tiny-llama-ortgenai.onnx", null)]
    [InlineData("tiny-llama.onnx", "w8a8-dynamic")]
    [InlineData("tiny-llama.onnx", "w4a8")]
    [InlineData("tiny-llama.onnx", "prefixquant-w8a8")]
    [InlineData("tiny-opt.onnx", null)]
    [InlineData("tiny-opt-fused.onnx", "w8a8-dynamic")]
    [InlineData("tiny-llama.onnx", "smoothquant-auto-causal")]          // ai.quantc.CausalAttention, prefill in int8
    [InlineData("tiny-llama-ortgenai.onnx", "smoothquant-auto-causal")] // the same from GroupQueryAttention
    [InlineData("tiny-llama-ortgenai.onnx", StoredInt8)]                // GroupQueryAttention's int8 cache (quantize_kv storage: native)
    [InlineData("tiny-llama-ortgenai.onnx", StoredInt4)]                // its uint8 cache of two 4-bit values per byte
    [InlineData("tiny-llama.onnx", StoredCausal)]                       // ai.quantc.CausalAttention's int8 cache
    [InlineData("tiny-llama.onnx", StoredCausal4)]                      // and its 4-bit one (codes read in the decode tiles)
    public void GreedyGenerationEqualsAnOnnxRuntimeGreedyLoop(string model, string? recipe)
    {
        string dir = Folder(Bundled(model), recipe);
        const int steps = 24;
        using var genai = new GenaiModel(dir);
        var prompt = genai.Encode("Once upon a time");
        // A prefix_tokens model keeps BOS in its KV-cache prefix: its prompt goes in without one.
        bool prefixed = recipe == "prefixquant-w8a8";
        Assert.Equal(prefixed, genai.PrefixHasBos);
        int[] text = Encoding.UTF8.GetBytes("Once upon a time").Select(b => (int)b).ToArray();
        Assert.Equal(prefixed ? text : [(int)ByteTokenizer.BosId, .. text], prompt);
        var ours = genai.Generate(prompt, new GenerateOptions { MaxTokens = steps });
        using var onnx = Model.Load(Path.Combine(dir, GenaiFolder.ModelFile));
        var loop = GreedyDecoding.Decode(onnx, prompt.Select(i => (long)i).ToList(), steps)!;
        // GenAI stops at EOS (BOS for the byte-level models); up to there both must agree token for token.
        Assert.Equal(loop.Take(ours.Generated.Count).Select(t => (int)t), ours.Generated);
        Assert.Equal(ours.Generated.Count < steps, ours.StoppedAtEos);
        if (ours.StoppedAtEos) Assert.Equal(ByteTokenizer.BosId, loop[ours.Generated.Count]);
        Assert.True(ours.PrefillTokensPerSecond > 0);
        // ai.quantc kernels (w4a8's, prefixquant-w8a8's, the -causal recipes' attention): the library is copied into the folder
        // and named relative to it.
        var session = JsonNode.Parse(File.ReadAllText(Path.Combine(dir,
            GenaiFolder.ConfigFile)))!["model"]!["decoder"]!["session_options"]!;
        bool customOps = Quantc.Core.Runtime.CustomOps.IsUsedBy(onnx);
        // One buffer as past and present cache (GenAI's past_present_share_buffer) where every attention takes it: ONNX Runtime's
        // GroupQueryAttention, and ai.quantc.CausalAttention's fixed-capacity cache; greedy decoding above ran that way.
        bool shared = recipe is "smoothquant-auto-causal" or StoredInt8 or StoredInt4 or StoredCausal or StoredCausal4
            || (model.Contains("ortgenai", StringComparison.Ordinal) && recipe is null);
        if (recipe is StoredInt8 or StoredInt4 or StoredCausal or StoredCausal4)
            Assert.Equal(recipe is StoredInt4 or StoredCausal4 ? 2 : 3,
                onnx.Graph.Inputs.Single(v => v.Name == "past_key_values.0.key").ElementType);
        Assert.Equal(shared, (bool)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, GenaiFolder.ConfigFile)))!["search"]!
            ["past_present_share_buffer"]!);
        Assert.Equal(recipe is "w4a8" or "prefixquant-w8a8" or "smoothquant-auto-causal" or StoredCausal or StoredCausal4,
            customOps);
        if (recipe == "smoothquant-auto-causal")
            Assert.Equal(4, onnx.Graph.Nodes.Count(n => n.Is("CausalAttention", Quantc.Core.Runtime.CustomOps.Domain) && n.GetInt("int8", 0) == 1));
        Assert.Equal(customOps ? GenaiFolder.CustomOpsFile : null, (string?)session["custom_ops_library"]);
        Assert.Equal(customOps, File.Exists(Path.Combine(dir, GenaiFolder.CustomOpsFile)));
    }

    [Theory]
    [InlineData("tiny-llama.onnx", null)]
    [InlineData("tiny-llama-ortgenai.onnx", null)]
    [InlineData("tiny-llama.onnx", "w8a8-dynamic")]
    [InlineData("tiny-llama.onnx", "prefixquant-w8a8")]
    [InlineData("tiny-llama-ortgenai.onnx", StoredInt4)]   // head_size is the whole head, not the packed cache's half
    public void ConfigIsDerivedFromTheGraph(string model, string? recipe)
    {
        string dir = Folder(Bundled(model), recipe);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, GenaiFolder.ConfigFile)))!["model"]!;
        var decoder = config["decoder"]!;
        var tiny = Quantc.Models.LlamaConfig.ForSize("tiny");
        Assert.Equal(tiny.NumLayers, (int)decoder["num_hidden_layers"]!);
        Assert.Equal(tiny.NumHeads, (int)decoder["num_attention_heads"]!);
        Assert.Equal(tiny.NumKvHeads, (int)decoder["num_key_value_heads"]!);
        Assert.Equal(tiny.HeadDim, (int)decoder["head_size"]!);
        Assert.Equal(tiny.HiddenSize, (int)decoder["hidden_size"]!);
        using var m = Model.Load(Bundled(model));
        Assert.Equal(TokenLimits.Of(m.Graph).Vocabulary, (long)config["vocab_size"]!);
        // prefix_tokens keeps its prefix in the cache, at the first positions.
        using var compiled = Model.Load(Path.Combine(dir, GenaiFolder.ModelFile));
        int prefix = compiled.Metadata.FirstOrDefault(kv => kv.Key == DecoderShape.PrefixTokensKey).Value?.Split(',').Length ?? 0;
        Assert.Equal(recipe == "prefixquant-w8a8", prefix > 0);
        Assert.Equal(tiny.MaxPositions - prefix, (long)config["context_length"]!);
        Assert.Equal("past_key_values.%d.key", (string?)decoder["inputs"]!["past_key_names"]);
        Assert.Equal("present.%d.value", (string?)decoder["outputs"]!["present_value_names"]);
        Assert.Equal(Quantc.Core.Runtime.CustomOps.IsUsedBy(compiled) ? GenaiFolder.CustomOpsFile : null,
            (string?)decoder["session_options"]!["custom_ops_library"]);
    }

    /// <summary>A float model with BOS moved into its KV-cache prefix (prefix_tokens) generates in GenAI what the original does:
    /// the prompt goes in without its own BOS, which the prefix already holds.</summary>
    [Fact]
    public void APrefixModelGeneratesTheOriginalsText()
    {
        const string prefixOnly = "passes: [{prefix_tokens: {tokens: [256]}}]";
        using var original = new GenaiModel(Folder(Bundled("tiny-llama.onnx"), null));
        using var prefixed = new GenaiModel(Folder(Bundled("tiny-llama.onnx"), prefixOnly));
        Assert.False(original.PrefixHasBos);
        Assert.True(prefixed.PrefixHasBos);
        var a = original.Generate(original.Encode("Once upon a time"), new GenerateOptions { MaxTokens = 20 });
        var b = prefixed.Generate(prefixed.Encode("Once upon a time"), new GenerateOptions { MaxTokens = 20 });
        Assert.Equal(a.Generated, b.Generated);
        Assert.Equal(original.Encode("Once upon a time")[1..], prefixed.Encode("Once upon a time"));
    }

    /// <summary>A model compiled earlier with RoPE inside ai.quantc.CausalAttention (lower_attention) still tells its context:
    /// the rows of the op's cos_cache, indexed by position_ids — so a GenAI folder can be made of it later.</summary>
    [Fact]
    public void TheContextOfALoweredModelIsItsCausalAttentionsRotaryCache()
    {
        using var m = Model.Load(Bundled("tiny-llama.onnx"));
        var calib = DataLoader.Load(m, Bundled("calib.txt"), new DataOptions { SequenceLength = 64, MaxSamples = 2 });
        var recipe = Quantc.Core.Pipeline.Recipe.Parse("passes: [fuse_norm, fuse_rope, fuse_attention, lower_attention]", "test recipe");
        using (new Compiler(Builtins.Passes()).Compile(m, recipe, new CompileOptions { Calibration = calib })) { }
        var ops = m.Graph.Nodes.Where(n => n.Is("CausalAttention", Quantc.Core.Runtime.CustomOps.Domain)).ToList();
        Assert.NotEmpty(ops);
        Assert.All(ops, n => Assert.NotNull(n.Inputs[6]));  // RoPE inside: no RotaryEmbedding left to read the context from
        Assert.DoesNotContain(m.Graph.Nodes, n => n.OpType == "RotaryEmbedding");
        var limits = TokenLimits.Of(m.Graph);
        var tiny = Quantc.Models.LlamaConfig.ForSize("tiny");
        Assert.Equal(tiny.MaxPositions, limits.Positions);
        Assert.Equal(ops[0].Inputs[6]!.Name, limits.PositionSource!.Split('\'')[1]);
        Assert.Equal(tiny.MaxPositions, DecoderShape.Of(m).ContextLength);
    }

    /// <summary>OPT's learned positions are reached through attention_mask's running sum (+ 2): the context is the table's rows
    /// less 2, and GenAI feeds the mask the graph computes them from.</summary>
    [Theory]
    [InlineData("tiny-opt.onnx")]
    [InlineData("tiny-opt-fused.onnx")]
    public void OptConfigHasTheLearnedPositionsContext(string model)
    {
        string dir = Folder(Bundled(model), null);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, GenaiFolder.ConfigFile)))!["model"]!;
        var opt = Quantc.Models.OptConfig.ForSize("tiny");
        Assert.Equal(opt.MaxPositions, (long)config["context_length"]!);
        Assert.Equal(opt.NumLayers, (int)config["decoder"]!["num_hidden_layers"]!);
        Assert.Equal(opt.NumHeads, (int)config["decoder"]!["num_key_value_heads"]!);
        Assert.Null(config["decoder"]!["inputs"]!["position_ids"]);
        // The same limit refuses data longer than the table reaches, before anything runs.
        using var m = Model.Load(Bundled(model));
        var limits = TokenLimits.Of(m.Graph);
        Assert.Equal(opt.MaxPositions, limits.Positions);
        Assert.Contains("positions computed from attention_mask (cumsum +1)", limits.PositionSource);
        limits.Check([new long[opt.MaxPositions]], "test");
        Assert.Contains($"longer than the model's {opt.MaxPositions} positions",
            Assert.Throws<BadInputException>(() => limits.Check([new long[opt.MaxPositions + 1]], "test")).Message);
    }

    [Fact]
    public void ByteLevelTokenizerRoundTripsUtf8()
    {
        string dir = Folder(Bundled("tiny-llama.onnx"), null);
        using var genai = new GenaiModel(dir);
        const string text = "Ünïcödé ✓ tabs\tand\nnewlines, 数字 123";
        var ids = genai.Encode(text);
        Assert.Equal([(int)ByteTokenizer.BosId, .. Encoding.UTF8.GetBytes(text).Select(b => (int)b)], ids);
        Assert.Equal(text, genai.Decode(ids));
    }

    [Fact]
    public void AModelWithoutAKvCacheIsRefused()
    {
        using var m = Model.Load(Bundled("tiny-mamba.onnx"));
        var e = Assert.Throws<BadInputException>(() => GenaiFolder.Plan(m, Bundled("tiny-mamba.onnx")));
        Assert.Contains("KV cache", e.Message);
        Assert.Contains("Mamba", e.Message);
    }
}
