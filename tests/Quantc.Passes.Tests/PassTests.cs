using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Models;
using Quantc.Onnx;
using Quantc.Passes;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

public sealed class PassTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-passes");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Text(string name) => Path.Combine(AppContext.BaseDirectory, name);

    /// <summary>A reference model saved and reloaded (so tensors come from a file, as in a real compile).</summary>
    private Model Load(string arch, string flavor = "torch")
    {
        var path = Path.Combine(_dir.FullName, $"{arch}-{flavor}-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave(arch, "tiny", 0, flavor, path);
        return Model.Load(path);
    }

    private static (IReadOnlyList<CalibrationSample> Samples, IReadOnlyList<long[]>? Tokens) Data(Model m, string file, int n) =>
        DataLoader.Load(m, Text(file), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = n }) is var d ? (d.Samples, d.Tokens) : default;

    private Model Compile(Model m, string recipeYaml) =>
        TestCompiler.CompileAndReload(_dir, m, recipeYaml, Data(m, "calib.txt", 8).Samples, out _);

    public static TheoryData<string, string, string> FunctionPreservingCases => new()
    {
        { "llama", "torch", "passes: [fold_norm]" },
        { "llama", "ortgenai", "passes: [fold_norm]" },
        { "llama", "torch", "passes: [smooth]" },
        { "llama", "ortgenai", "passes: [smooth]" },
        { "llama", "torch", "passes: [fold_norm, {smooth: {alpha: 0.8}}]" },
        { "llama", "torch", "passes: [{smooth: {alpha: auto}}]" },
        { "opt", "fused", "passes: [{smooth: {alpha: auto, alpha_grid: [0.4, 0.6, 0.8], search_rows: 64}}]" },
        { "opt", "torch", "passes: [fold_norm]" },
        { "opt", "torch", "passes: [symmetrize, smooth]" },
        { "llama", "torch", "passes: [symmetrize, smooth]" },
        { "llama", "torch", "passes: [symmetrize, fold_norm, fuse_norm]" },
        { "opt", "fused", "passes: [fold_norm]" },
        { "opt", "fused", "passes: [smooth]" },
        { "opt", "fused", "passes: [symmetrize]" },
        { "opt", "fused", "passes: [fold_norm, smooth, symmetrize]" },
        { "opt", "torch", "passes: [{symmetrize: {shift: mean_centre}}, {smooth: {alpha: 1.0, power_of_two: false, through_mlp: false}}]" },
        { "mamba", "torch", "passes: [fold_norm]" },
        { "llama", "torch", "passes: [{online_hadamard: {layers: 'o_proj$'}}]" },
        { "llama", "ortgenai", "passes: [{online_hadamard: {layers: 'o_proj$', portable: true}}]" },
        // down_proj's K = 344 = 172·2: the Goethals–Seidel order (ai.quantc.Hadamard and the portable MatMul).
        { "llama", "torch", "passes: [{online_hadamard: {layers: 'down_proj$'}}]" },
        { "llama", "ortgenai", "passes: [{online_hadamard: {layers: 'down_proj$', portable: true}}]" },
    };

    /// <summary>K = 344 (172·2) is rotated now, not skipped: one online Hadamard per down_proj.</summary>
    [Fact]
    public void OnlineHadamardRotatesTheOrder172DownProjections()
    {
        using var m = Load("llama");
        int layers = m.Graph.AllNodes().Count(n => n.OpType == "MatMul" && n.Inputs.Any(v => v?.Name.EndsWith("down_proj.weight", StringComparison.Ordinal) == true));
        using var compiled = Compile(m, "passes: [{online_hadamard: {layers: 'down_proj$'}}]");
        Assert.True(layers > 0);
        Assert.Equal(layers, compiled.Graph.AllNodes().Count(n => n.OpType == "Hadamard" && n.Domain == "ai.quantc"));
    }

    /// <summary>Function-preserving passes leave every output unchanged: max relative error ≤ 1e-5.</summary>
    [Theory]
    [MemberData(nameof(FunctionPreservingCases))]
    public void FunctionPreservingPassesDoNotChangeOutputs(string arch, string flavor, string recipe)
    {
        using var original = Load(arch, flavor);
        using var m = Load(arch, flavor);
        using var compiled = Compile(m, recipe);
        var (samples, tokens) = Data(original, "eval.txt", 2);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        foreach (var o in r.Outputs)
        {
            double relMax = o.MaxAbsError / MaxAbs(original, samples, o.Name);
            log.WriteLine($"{arch}/{flavor} {recipe}: {o.Name} max rel err {relMax:E2}, SQNR {o.SqnrDb:0.0} dB");
            // Rotations re-associate sums of K terms in float32 (the transform, then the rotated GEMM): through
            // the reference model's 1e3-scale activation spikes that measures 1–2e-5, so they get 3e-5; every
            // other function-preserving pass is held to 1e-5. down_proj's input carries those spikes straight into
            // the K = 344 transform (the rotated GEMM then cancels them back out): 3.3e-5 (op) and 4.5e-5 (portable
            // MatMul) measured, so 1e-4 — a wrong matrix is off by O(1).
            // symmetrize on the llama: its RMSNorm outputs carry those spikes, and x·W − z·W + z·W re-associates them (the shift z
            // is the spike channels' centre): 1.5e-5 (then fold_norm, fuse_norm) and 6.7e-5 (then smooth) measured, so 1e-4.
            double limit = recipe.Contains("down_proj", StringComparison.Ordinal)
                || (arch == "llama" && recipe.Contains("symmetrize", StringComparison.Ordinal)) ? 1e-4
                : recipe.Contains("hadamard", StringComparison.Ordinal) ? 3e-5 : 1e-5;
            Assert.True(relMax <= limit, $"{o.Name}: max relative error {relMax:E3} > {limit:E0}");
        }
    }

    /// <summary>
    /// The function-preservation cases above would also pass if a pass did nothing: on both OPT flavors,
    /// fold_norm, smooth and symmetrize each rewrite through every one of the 9 LayerNorms (LayerNormalization
    /// and SkipLayerNormalization in the fused flavor) into all 17 layers they feed.
    /// </summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("fused")]
    public void NormPassesReachEveryLayerNormOfOpt(string flavor)
    {
        var fed = Enumerable.Range(0, 4).SelectMany(i => new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "fc1" }.Select(p => $"model.decoder.layers.{i}.{p}")).Append("lm_head").ToList();
        // smooth and symmetrize with exclude: [] (their default leaves lm_head, which quantize keeps float, alone).
        foreach (var (pass, mark) in new[]
                 { ("fold_norm", "folded "), ("{smooth: {exclude: []}}", "smoothed "), ("{symmetrize: {exclude: []}}", "symmetrized via ") })
        {
            using var m = Load("opt", flavor);
            var ctx = TestCompiler.Compile(m, $"passes: [{pass}]", Data(m, "calib.txt", 4).Samples).Context;
            foreach (var layer in fed)
                Assert.Contains(ctx.Plan[layer].Transforms, t => t.StartsWith(mark, StringComparison.Ordinal));
            Assert.Equal(fed.Count, ctx.Plan.Layers.Count(p => p.Transforms.Any(t => t.StartsWith(mark, StringComparison.Ordinal))));
            Assert.DoesNotContain(ctx.Log, l => l.Contains("skipped", StringComparison.Ordinal) || l.Contains("not folded", StringComparison.Ordinal) || l.Contains("not smoothed", StringComparison.Ordinal));
        }
    }

    private static double MaxAbs(Model m, IReadOnlyList<CalibrationSample> samples, string output)
    {
        var stats = Calibrator.Collect(m, [output], samples);
        return Math.Max(stats[output].AbsMax, 1e-30);
    }

    private (double Sqnr, VerifyReport Report) SqnrOf(string arch, string recipeName, string flavor = "torch")
    {
        using var original = Load(arch, flavor);
        using var m = Load(arch, flavor);
        using var compiled = Compile(m, Builtins.Recipes[recipeName]);
        Assert.DoesNotContain(compiled.Graph.AllNodes(), n => n.Domain == "ai.quantc"); // stock ONNX Runtime, no custom ops
        var (samples, tokens) = Data(original, "eval.txt", 4);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{arch} {flavor} {recipeName}: logits SQNR {sqnr:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        return (sqnr, r);
    }

    /// <summary>Every built-in recipe for transformers (the Mamba ones aside; the learned-rounding ones, minutes each at their
    /// 5000 steps per layer, run with few steps in <see cref="LearnedRoundingTests"/>).</summary>
    public static TheoryData<string> TransformerRecipes =>
        [.. Builtins.Recipes.Keys.Where(k => !k.Contains("mamba", StringComparison.Ordinal)
            && !k.StartsWith("quamba", StringComparison.Ordinal) && !LearnedRoundingTests.Learns(k))];

    /// <summary>
    /// The model map's worth: Qwen2's variant (biases on q/k/v, the head tied to the input embedding through a Transpose)
    /// compiles and verifies with every transformer recipe. QuaRot's fold_norm unties the head (untie: true) so that the
    /// final norm's γ folds into a copy and R1 rotates the embedding and the head apart.
    /// </summary>
    [Theory]
    [MemberData(nameof(TransformerRecipes))]
    public void EveryTransformerRecipeCompilesAndVerifiesOnQwen2(string recipe)
    {
        using var original = Load("qwen2");
        using var m = Load("qwen2");
        using var compiled = Compile(m, Builtins.Recipes[recipe]);
        var (samples, tokens) = Data(original, "eval.txt", 2);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        var logits = r.Outputs.Single(o => o.Name == "logits");
        log.WriteLine($"qwen2 {recipe}: logits SQNR {logits.SqnrDb:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        Assert.Equal(0, logits.NonFinite);
        // QuaRot's W4A8 is the weakest here (about 4 dB with down_proj, K = 344, in int4 groups of 8; 9.8 dB while it
        // stayed float).
        // PrefixQuant W4A4 (4-bit static per-tensor activations, simulated): 0.1–0.2 dB, top-1 59–64 % measured.
        bool w4a4 = recipe.StartsWith("prefixquant-w4a4", StringComparison.Ordinal);
        Assert.True(w4a4 || logits.SqnrDb > 3, $"{recipe}: logits SQNR {logits.SqnrDb:0.00} dB");
        double floor = w4a4 ? 0.5 : recipe.StartsWith("quarot", StringComparison.Ordinal) ? 0.75 : 0.9;   // QuaRot measured 81–87 %, the rest ≥ 96 %
        Assert.True(r.Logits.Top1Agreement > floor, $"{recipe}: top-1 agreement {r.Logits.Top1Agreement:P1}");
        if (recipe.StartsWith("quarot", StringComparison.Ordinal))
            Assert.DoesNotContain(compiled.Graph.Nodes, n => n.Is("Transpose") && n.Inputs[0]?.Name == "model.embed_tokens.weight");
    }

    /// <summary>reduce_range puts 8-bit layers' int8 weights on the 7-bit grid (true: static and per-token dynamic), keeps int8 (false), and follows this CPU (auto: static layers only).</summary>
    [Theory]
    [InlineData("true")]
    [InlineData("false")]
    [InlineData("auto")]
    public void ReduceRangeChoosesSevenBitWeightsForStaticEightBitLayers(string setting)
    {
        using var m = Load("llama");
        var ctx = TestCompiler.Compile(m, $$"""
            passes:
              - quantize: { weights: int8, activations: uint8, mode: static, dynamic: ["down_proj$"], reduce_range: {{setting}} }
              - weights: { method: rtn }
            """).Context;
        bool reduced = setting == "true" || (setting == "auto" && !Quantc.Core.Runtime.CpuFeatures.HasInt8DotProduct);
        if (setting == "auto") Assert.Contains(ctx.Log, l => l.StartsWith($"quantize: reduce_range auto → {(reduced ? "on" : "off")}: this CPU ({Quantc.Core.Runtime.CpuFeatures.Description})", StringComparison.Ordinal));
        var layers = LayerAnalysis.Analyze(m.Graph).Linears.Where(l => l.Name != "lm_head").ToList();
        Assert.NotEmpty(layers);
        foreach (var l in layers)
        {
            var plan = ctx.Plan[l.Name];
            bool dynamic = l.Name.EndsWith("down_proj", StringComparison.Ordinal);
            // auto keeps per-token dynamic layers at int8 (their rows sit around the zero point); true reduces them too.
            string expected = reduced && (!dynamic || setting == "true") ? "int7" : "int8";
            Assert.Equal(expected, plan.WeightFormat.Name);
            var q = plan.QuantizedWeight!;
            int lo = q.Values.Min(v => (int)v), hi = q.Values.Max(v => (int)v);
            // Symmetric RTN reaches the grid's end on every row's largest weight.
            if (expected == "int7") Assert.True(lo >= -64 && hi <= 63 && Math.Max(-lo, hi) == 63, $"{l.Name}: int7 values in [{lo}, {hi}]");
            else Assert.True(Math.Max(-lo, hi) == 127, $"{l.Name}: int8 values in [{lo}, {hi}]");
        }
    }

    [Fact]
    public void OutlierMethodsBeatNaiveW8A8OnLlama()
    {
        // Measured (4 held-out sequences): on a VNNI CPU (int8 weights) naive 7.7, smoothquant 16.8, outliertune
        // 24.7, spike-mixed 10.0 dB; on an AVX2-only CPU (reduce_range: 7-bit weights) 7.1, 17.2, 23.7, 8.9 dB.
        // Spike-mixed only removes the token spikes (the outlier channels stay), so its margin is the smaller one.
        double naive = SqnrOf("llama", "w8a8").Sqnr;
        foreach (var (recipe, margin) in new[] { ("smoothquant", 5.0), ("outliertune", 5.0), ("spike-mixed", 1.5) })
            Assert.True(SqnrOf("llama", recipe).Sqnr > naive + margin, $"{recipe} should beat naive w8a8 ({naive:0.0} dB) by > {margin} dB");
    }

    /// <summary>
    /// smooth with alpha: auto beats the fixed α = 0.5 on llama, whose massive-activation channels want more migration
    /// (measured on an AVX2-only CPU: 23.8 against 17.3 dB logits SQNR with 16 calibration sequences; the search
    /// chose 0.8–0.9 for most groups).
    /// </summary>
    [Fact]
    public void SearchedAlphaBeatsTheFixedOneOnLlama()
    {
        double fixedAlpha = SqnrOf("llama", "smoothquant").Sqnr, searched = SqnrOf("llama", "smoothquant-auto").Sqnr;
        Assert.True(searched > fixedAlpha + 3, $"smoothquant-auto {searched:0.0} dB vs smoothquant {fixedAlpha:0.0} dB");
    }

    private double SqnrOfYaml(string arch, string yaml, out PassContext ctx, out Model compiled)
    {
        using var original = Load(arch);
        using (var m = Load(arch))
        {
            compiled = TestCompiler.CompileAndReload(_dir, m, yaml, Data(m, "calib.txt", 8).Samples, out var result);
            ctx = result.Context;
        }
        var (samples, tokens) = Data(original, "eval.txt", 4);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{arch} {yaml.ReplaceLineEndings(" ")}: logits SQNR {sqnr:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        return sqnr;
    }

    private const string SpikeMixedYaml = """
        passes:
          - quantize: { weights: int8, activations: uint8, mode: static }
          - spike_mixed: { threshold: 50, budget: 0.15, precision: PRECISION }
          - ranges: { method: minmax }
          - weights: { method: rtn }
          - lower_qdq
        """;

    /// <summary>
    /// spike_mixed with precision fp8 keeps the same spiky projections as with fp16, as float8 e4m3fn weights and static
    /// activations with per-tensor scales (one byte per weight), at about the same accuracy (measured 9.76 dB for both
    /// on tiny-llama with the CLI's data).
    /// </summary>
    [Fact]
    public void SpikeMixedFp8KeepsTheSpikyLayersInFloat8()
    {
        double fp16 = SqnrOfYaml("llama", SpikeMixedYaml.Replace("PRECISION", "fp16", StringComparison.Ordinal), out var c16, out var m16);
        double fp8 = SqnrOfYaml("llama", SpikeMixedYaml.Replace("PRECISION", "fp8", StringComparison.Ordinal), out var c8, out var m8);
        using (m16) using (m8)
        {
            var kept16 = c16.Log.Where(l => l.Contains(" kept fp16", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).ToList();
            var kept8 = c8.Log.Where(l => l.Contains(" kept fp8", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).ToList();
            Assert.NotEmpty(kept8);
            Assert.Equal(kept16, kept8);
            Assert.Equal(kept8.Count, m8.Graph.Initializers.Count(v => v.ElementType == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float8E4M3Fn));
            Assert.Contains(m8.Graph.Nodes, n => n.Is("Cast") && n.GetInt("to", 0) == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float8E4M3Fn);
            Assert.True(fp8 > fp16 - 1.0, $"fp8 {fp8:0.00} dB vs fp16 {fp16:0.00} dB");
        }
    }

    /// <summary>
    /// quantize with weights: fp8 and activations: fp8 gives float8 e4m3fn W8A8 with per-tensor scales; it runs in ONNX
    /// Runtime (CPU: dequantized, the MatMul in float) close to the float model (measured 14.7 dB / top-1 91 % on
    /// tiny-llama, 28.5 dB on opt with the CLI's data).
    /// </summary>
    [Theory]
    [InlineData("llama", 11.0)]
    [InlineData("opt", 24.0)]
    public void Fp8WeightsAndActivationsRunInOnnxRuntime(string arch, double floorDb)
    {
        double sqnr = SqnrOfYaml(arch, """
            passes:
              - quantize: { weights: fp8, activations: fp8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """, out var ctx, out var compiled);
        using (compiled)
        {
            int quantized = ctx.Plan.Layers.Count(p => p.WeightFormat == NumberFormat.Fp8);
            Assert.True(quantized > 0);
            Assert.Equal(quantized, compiled.Graph.Initializers.Count(v => v.ElementType == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float8E4M3Fn));
            Assert.True(sqnr > floorDb, $"logits SQNR {sqnr:0.00} dB ≤ {floorDb} dB");
        }
    }

    [Theory]
    [InlineData("{quantize: {weights: fp8, activations: fp8, mode: dynamic}}", "fp8 activations are static per-tensor")]
    [InlineData("{quantize: {weights: int8, activations: int8, mode: dynamic}}, {spike_mixed: {precision: fp8, threshold: 1, budget: 1}}, weights, lower_qdq",
        "has static fp8 activations without a range: put a ranges pass before lower_qdq")]
    [InlineData("{quantize: {weights: int8, activations: uint8, granularity: per_group, group_size: 32}}, ranges, weights, lower_qdq", "per-group int8 weights are not lowered")]
    public void RecipeMistakesAreClearErrors(string pass, string words)
    {
        using var m = Load("llama");
        var e = Assert.Throws<BadInputException>(() => Compile(m, $"passes: [{pass}]"));
        Assert.Contains(words, e.Message);
    }

    /// <summary>Each pass is declared once (its Info): the registry, the pass instance and `quantc recipes` agree, every option is documented.</summary>
    [Fact]
    public void EveryPassIsDeclaredOnceWithDocumentedOptions()
    {
        var registry = Builtins.Passes();
        // 21 + FireQ's fireq_scale, fireq_rope, fireq_weights, lower_int4fp8 + prefix_tokens, clip_search + lower_attention
        Assert.Equal(28, registry.All.Count);
        foreach (var info in registry.All)
        {
            var pass = registry.Create(info.Name, new PassParameters(null, "test"));
            Assert.Equal(info.Name, pass.Name);
            Assert.Equal(info.Kind, pass.Kind);
            Assert.False(string.IsNullOrWhiteSpace(info.Description));
            foreach (var o in info.Options)
            {
                Assert.Matches("^[a-z][a-z0-9_]*$", o.Name);
                Assert.False(string.IsNullOrWhiteSpace(o.Attribute.Doc), $"{info.Name}.{o.Name} has no doc");
            }
        }
        foreach (var name in Builtins.Recipes.Keys)
            Assert.NotEmpty(new PassManager(registry).Instantiate(Builtins.Recipe(name)));
    }

    [Theory]
    [InlineData("{smooth: {alpha: 1.5}}", "must be a number in [0, 1] or auto")]
    [InlineData("{fireq_rope: {pre: false, post: false}}", "nothing to scale")]
    [InlineData("{quantize_kv: {fp8_scales: true}}", "fp8_scales needs symmetric: true")]
    [InlineData("{fireq_weights: {group_size: 4}}", "'group_size' = 4 must be at least 8")]
    [InlineData("{smooth: {alpha: 0.5, alpha_grid: [0.3]}}", "need alpha: auto")]
    [InlineData("{smooth: {alpha: auto, alpha_grid: [2]}}", "'alpha_grid' = 2 must be in [0, 1]")]
    [InlineData("{smooth: {alpha: NaN}}", "must be a number in [0, 1] or auto")]
    [InlineData("{quantize: {group_size: 0}}", "'group_size' = 0 must be at least 1")]
    [InlineData("{quantize: {group_size: -32}}", "'group_size' = -32 must be at least 1")]
    [InlineData("{quantize: {exclude: ['(']}}", "is not a valid regular expression")]
    [InlineData("{online_hadamard: {layers: '[z-a]'}}", "is not a valid regular expression")]
    [InlineData("{ranges: {percentile: 200}}", "'percentile' = 200 must be in (0, 100]")]
    [InlineData("{ranges: {percentile: .inf}}", "is not a finite number")]
    [InlineData("{spike_mixed: {budget: 1.5}}", "'budget' = 1.5 must be in [0, 1]")]
    [InlineData("{quantize_kv: {bits: 3}}", "'bits' = 3 must be 4 or 8")]
    [InlineData("{quantize_kv: {clip_ratio: 0}}", "'clip_ratio' = 0 must be in (0, 1]")]
    [InlineData("{quantize_kv: {format: fp16}}", "must be one of int, fp8, fp8_expanded")]
    [InlineData("{quantize_kv: {format: fp8, bits: 8}}", "format fp8 is 8 bits per value: drop 'bits'")]
    [InlineData("{quantize_kv: {format: fp8_expanded, symmetric: true}}", "format fp8_expanded has its own per token and head scaling")]
    [InlineData("{lower_matmulnbits: {accuracy_level: 5}}", "'accuracy_level' = 5 must be in [0, 4]")]
    [InlineData("{mamba_ranges: {x_method: mse}}", "must be one of percentile, minmax")]
    [InlineData("{smooth: {alpha: auto, search_rows: 0}}", "must be at least 1")]
    public void BadPassParametersAreClearErrors(string pass, string words)
    {
        var e = Assert.Throws<BadInputException>(() => TestCompiler.Compiler.Instantiate(Recipe.Parse($"passes: [{pass}]", "test recipe")));
        Assert.Contains(words, e.Message);
    }

    /// <summary>
    /// The W8A8 recipes work on OPT's fused flavor as on its torch flavor: the same layers are quantized
    /// (the norms are SkipLayerNormalization there), so OutlierTune reaches the torch flavor's logits SQNR
    /// and beats naive W8A8 just as clearly.
    /// </summary>
    [Fact]
    public void OutlierTuneOnFusedOptMatchesTheTorchFlavor()
    {
        var torch = SqnrOf("opt", "outliertune", "torch").Sqnr;
        var fused = SqnrOf("opt", "outliertune", "fused").Sqnr;
        var naive = SqnrOf("opt", "w8a8", "fused").Sqnr;
        Assert.True(Math.Abs(fused - torch) <= 1.0, $"outliertune: fused {fused:0.00} dB vs torch {torch:0.00} dB");
        Assert.True(fused > naive + 10, $"outliertune {fused:0.0} dB should beat naive w8a8 ({naive:0.0} dB) on the fused OPT by > 10 dB");
    }

    [Fact]
    public void GptqBeatsRtnForInt4Weights()
    {
        double rtn = SqnrOf("llama", "w4a16-rtn").Sqnr;
        double gptq = SqnrOf("llama", "w4a16-gptq").Sqnr;
        Assert.True(gptq > rtn + 1, $"GPTQ {gptq:0.0} dB vs RTN {rtn:0.0} dB");
    }

    /// <summary>The previous W6A6 recipe (SmoothQuant-style α = 0.75 with power-of-two factors, every input static per-tensor, symmetric weights): the baseline OutlierTune's real method must beat.</summary>
    private const string W6A6PerTensorBaseline = """
        passes:
          - symmetrize
          - smooth: { alpha: 0.75 }
          - quantize: { weights: int6, activations: int6, mode: static }
          - ranges: { method: percentile, percentile: 99.99 }
          - weights: { method: rtn }
          - lower_qdq
        """;

    private double SqnrOfYaml(string arch, string yaml)
    {
        using var original = Load(arch);
        using var m = Load(arch);
        using var compiled = Compile(m, yaml);
        var (samples, tokens) = Data(original, "eval.txt", 4);
        return Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false }).Outputs.Single(o => o.Name == "logits").SqnrDb;
    }

    /// <summary>
    /// W6A6 OutlierTune (per-channel activation scales pre-executed into the weights, per-token o_proj/down_proj
    /// inputs, asymmetric 6-bit weights) stays within a few dB of what 6-bit grids allow and clearly beats the
    /// per-tensor W6A6 baseline on both reference transformers.
    /// </summary>
    [Theory]
    [InlineData("llama", 19.0)]
    [InlineData("opt", 26.0)]
    public void W6A6OutlierTuneComesCloseToFloat(string arch, double floorDb)
    {
        double baseline = SqnrOfYaml(arch, W6A6PerTensorBaseline);
        var (sqnr, r) = SqnrOf(arch, "w6a6-outliertune");
        log.WriteLine($"{arch}: per-tensor W6A6 baseline {baseline:0.00} dB, w6a6-outliertune {sqnr:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        Assert.True(sqnr > floorDb, $"w6a6-outliertune logits SQNR {sqnr:0.0} dB ≤ {floorDb} dB");
        Assert.True(sqnr > baseline + 2, $"w6a6-outliertune {sqnr:0.0} dB should beat the per-tensor W6A6 baseline {baseline:0.0} dB by > 2 dB");
        Assert.True(r.Logits!.Top1Agreement > 0.85, $"top-1 agreement {r.Logits.Top1Agreement:P1}");
    }

    /// <summary>Ablation on the reference OPT (LayerNorm with β, so symmetrization applies): W6A6 OutlierTune with symmetrization beats it without.</summary>
    [Fact]
    public void SymmetrizationHelpsW6A6OutlierTuneOnOpt()
    {
        var (on, ron) = SqnrOf("opt", "w6a6-outliertune");
        var (off, roff) = SqnrOf("opt", "w6a6-outliertune-nosym");
        double fp = ron.Logits!.OriginalPerplexity;
        log.WriteLine($"opt W6A6: symmetrization on {on:0.00} dB (PPL {ron.Logits.CompiledPerplexity:0.000}), off {off:0.00} dB (PPL {roff.Logits!.CompiledPerplexity:0.000}), fp32 PPL {fp:0.000}");
        Assert.True(on > off, $"symmetrization on {on:0.00} dB should beat off {off:0.00} dB");
    }

    /// <summary>
    /// OutlierTune's symmetrization on the reference OPT: each LayerNorm output it shifts gets a smaller
    /// absolute range (so a finer per-tensor quantization step), while the model's outputs are unchanged
    /// (the function-preservation test above).
    /// </summary>
    [Fact]
    public void SymmetrizationShrinksTheQuantizationRangeOfShiftedActivations()
    {
        using var m = Load("opt");
        // The final norm, read only by lm_head (which stays float), is not shifted.
        var norms = Quantc.Ir.Analysis.LayerAnalysis.Analyze(m.Graph).Norms
            .Where(n => n.Beta is not null && !n.Feeds.All(l => l.Name == "lm_head")).Select(n => n.Output.Name).ToList();
        var data = Data(m, "calib.txt", 8).Samples;
        var before = Calibrator.Collect(m, norms, data);
        var ctx = new PassContext(m) { CalibrationData = data };
        new SymmetrizePass().Run(ctx);
        var after = Calibrator.Collect(m, norms, data);
        int shrunk = 0;
        foreach (var t in norms)
        {
            log.WriteLine($"{t}: absmax {before[t].AbsMax:G4} → {after[t].AbsMax:G4}");
            Assert.True(after[t].AbsMax <= before[t].AbsMax * 1.0001f, $"{t}: range grew");
            if (after[t].AbsMax < 0.95f * before[t].AbsMax) shrunk++;
        }
        Assert.True(shrunk >= norms.Count / 2, $"only {shrunk} of {norms.Count} shifted norm outputs got a clearly smaller range");
    }

    /// <summary>
    /// verify's per-layer rows compare only tensors that carry the original's values: a norm output that
    /// smooth divided, symmetrize shifted or rotate_residual rotated (and the quantized copies standing for
    /// it) is recorded as transformed and left out, instead of being reported against the untransformed
    /// original as a meaningless error. Tensors that passes left alone (the layers' results) are still compared.
    /// </summary>
    [Theory]
    [InlineData("llama", "smoothquant")]
    [InlineData("opt", "outliertune")]
    [InlineData("llama", "quarot-w4a8-portable")]
    public void VerifyLeavesTransformedTensorsOut(string arch, string recipe)
    {
        using var original = Load(arch);
        using var m = Load(arch);
        var normOutputs = Quantc.Ir.Analysis.LayerAnalysis.Analyze(original.Graph).Norms.Select(n => n.Output.Name).ToHashSet(StringComparer.Ordinal);
        using var compiled = Compile(m, Builtins.Recipes[recipe]);
        var prov = Provenance.Of(compiled);
        Assert.Contains(normOutputs, prov.IsTransformed);
        var (samples, tokens) = Data(original, "eval.txt", 2);
        var r = Verifier.Run(original, compiled, samples, tokens);
        Assert.NotEmpty(r.Layers);
        foreach (var row in r.Layers)
        {
            Assert.False(prov.IsTransformed(row.CompiledName), $"{row.CompiledName} is transformed but was compared with {row.OriginalName}");
            Assert.DoesNotContain(row.OriginalName, normOutputs.Where(prov.IsTransformed));
        }
        // The linear layers' results are the same function of the input: they stay in the comparison.
        var results = Quantc.Ir.Analysis.LayerAnalysis.Analyze(original.Graph).Linears.Select(l => l.Output.Name).ToHashSet(StringComparer.Ordinal);
        Assert.Contains(r.Layers, row => results.Contains(row.OriginalName));
        log.WriteLine($"{arch} {recipe}: {r.Layers.Count} layer rows; transformed: {prov.Origins.Count(kv => kv.Value.Contains('#'))}");
    }

    /// <summary>Every built-in recipe on every reference model and graph flavor.</summary>
    public static TheoryData<string, string, string> RecipeMatrix()
    {
        var d = new TheoryData<string, string, string>();
        foreach (var (arch, flavor) in new[] { ("llama", "torch"), ("llama", "ortgenai"), ("opt", "torch"), ("opt", "fused"), ("mamba", "torch") })
            foreach (var recipe in Builtins.Recipes.Keys.Where(k => !LearnedRoundingTests.Learns(k))) d.Add(arch, flavor, recipe);
        return d;
    }

    /// <summary>
    /// The (model, recipe) pairs a recipe does not apply to, with the words its refusal must contain:
    /// QuaRot's residual rotation needs an RMSNorm-fed embedding, which OPT (LayerNorm, learned
    /// positions) does not have; the Mamba recipes need Mamba mixers.
    /// </summary>
    private static string? ExpectedRefusal(string arch, string recipe) => (arch, recipe) switch
    {
        ("opt", _) when recipe.StartsWith("quarot", StringComparison.Ordinal) || recipe.StartsWith("prefixquant", StringComparison.Ordinal)
            => "rotate_residual: cannot rotate the residual stream",
        ("mamba", _) when recipe.StartsWith("prefixquant", StringComparison.Ordinal) && !recipe.EndsWith("-noprefix", StringComparison.Ordinal)
            => "prefix_tokens: no attention with a KV cache",
        (not "mamba", _) when recipe.StartsWith("quamba", StringComparison.Ordinal) || recipe == "mamba-w8a8" => "mamba_ranges: no Mamba mixer found",
        _ => null,
    };

    /// <summary>
    /// Each built-in recipe compiles each reference model, and the result runs in stock ONNX Runtime (with
    /// quantc's custom-op library registered where a recipe emits ai.quantc ops) within a loose accuracy
    /// floor: logits SQNR above 5 dB and top-1 agreement above 35 %. The compiled graph really quantizes
    /// (it dequantizes integer weights).
    /// </summary>
    [Theory]
    [MemberData(nameof(RecipeMatrix))]
    public void EveryRecipeCompilesEveryReferenceModel(string arch, string flavor, string recipe)
    {
        using var original = Load(arch, flavor);
        using var m = Load(arch, flavor);
        if (ExpectedRefusal(arch, recipe) is { } refusal)
        {
            var e = Assert.Throws<BadInputException>(() => Compile(m, Builtins.Recipes[recipe]));
            Assert.Contains(refusal, e.Message);
            return;
        }
        using var compiled = Compile(m, Builtins.Recipes[recipe]);
        Assert.Contains(compiled.Graph.AllNodes(), n => n.OpType == "DequantizeLinear" || (n.Domain == "ai.quantc" && n.OpType.StartsWith("MatMul", StringComparison.Ordinal)));
        var (samples, tokens) = Data(original, "eval.txt", 2);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{arch}/{flavor} {recipe}: logits SQNR {sqnr:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        // quarot-w4a8-portable quantizes the reference LLaMA's down_proj (K = 344, the engineered spike layers) to int4 with
        // group size 8 since issue 15 (it stayed float before, K not being a multiple of 32): 4.5–4.7 dB measured.
        // quarot-w4a8-causal runs prefill's attention in int8 since session 19: on these two samples 5.45 → 4.79 dB, on all of
        // models/eval.txt 5.68 → 5.72 dB (`quantc verify`), i.e. two samples at this level move by more than the int8 costs.
        // quarot-w4a8-causal-kv8 (the same with the cache stored as int8): 5.22 (torch) and 5.07 dB (ortgenai) measured.
        double floor = arch != "llama" ? 5
            : recipe switch { "quarot-w4a8-portable" => 4, "quarot-w4a8-causal" or "quarot-w4a8-causal-kv8" => 4.5, _ => 5 };
        // PrefixQuant's 4-bit static per-tensor recipes against the reference models' token-id-triggered spikes (which a
        // prefix cannot remove; bench/RESULTS.md "PrefixQuant"): W4A8KV4 measured 3.65 dB, W4A4KV4 −0.9 to 1 dB — no floor,
        // the outputs must be finite.
        if (recipe.StartsWith("prefixquant-w4", StringComparison.Ordinal))
        {
            Assert.Equal(0, r.Outputs.Single(o => o.Name == "logits").NonFinite);
            if (recipe.Contains("w4a4", StringComparison.Ordinal)) return;
            floor = 3;
        }
        Assert.True(sqnr > floor, $"logits SQNR {sqnr:0.0} dB ≤ {floor} dB");
        Assert.True(r.Logits.Top1Agreement > 0.35, $"top-1 agreement {r.Logits.Top1Agreement:P1} ≤ 35 %");
    }

    /// <summary>
    /// lower_matmulnbits packs int4 blocks, scales and zero points exactly: in ONNX Runtime its MatMulNBits
    /// model gives bit-identical logits to the QDQ form (DequantizeLinear(block_size) → MatMul) of the same
    /// plan, for symmetric and asymmetric weights, and no DequantizeLinear is left but those of group size 8. ONNX Runtime fuses the
    /// QDQ form into MatMulNBits with accuracy_level 4 (int8 activations), so that is the level compared.
    /// </summary>
    [Theory]
    [InlineData(true, 32)]
    [InlineData(false, 64)]
    public void MatMulNBitsEqualsTheQdqForm(bool symmetric, int group)
    {
        string Recipe(string lower) => $$"""
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: {{group}}, activations: fp32, symmetric: {{(symmetric ? "true" : "false")}} }
              - weights: { method: rtn }
            {{lower}}
            """;
        using var qdqSource = Load("llama");
        using var nbitsSource = Load("llama");
        using var qdq = Compile(qdqSource, Recipe("  - lower_qdq"));
        using var nbits = Compile(nbitsSource, Recipe("  - lower_matmulnbits: { accuracy_level: 4 }\n  - lower_qdq"));
        int int4Layers = qdq.Graph.AllNodes().Count(n => n.OpType == "DequantizeLinear");
        Assert.True(int4Layers >= 20, $"only {int4Layers} int4 layers in the QDQ form");
        // down_proj's K = 344 takes group size 8 (the largest multiple of 8 dividing it), which MatMulNBits does not: it stays QDQ.
        int downProjs = qdq.Graph.AllNodes().Count(n => n.OpType == "DequantizeLinear" && n.Name.Contains("down_proj", StringComparison.Ordinal));
        Assert.Equal(int4Layers - downProjs, nbits.Graph.AllNodes().Count(n => n.OpType == "MatMulNBits" && n.Domain == "com.microsoft"));
        Assert.All(nbits.Graph.AllNodes().Where(n => n.OpType == "DequantizeLinear"), n => Assert.Contains("down_proj", n.Name, StringComparison.Ordinal));
        var (samples, tokens) = Data(qdq, "eval.txt", 2);
        var r = Verifier.Run(qdq, nbits, samples, tokens, new VerifyOptions { PerLayer = false });
        var logits = r.Outputs.Single(o => o.Name == "logits");
        log.WriteLine($"symmetric {symmetric}, group {group}: MatMulNBits vs QDQ logits SQNR {logits.SqnrDb:0.0} dB, max |err| {logits.MaxAbsError:G3}");
        Assert.True(logits.MaxAbsError == 0, $"MatMulNBits differs from the QDQ form: SQNR {logits.SqnrDb:0.0} dB, max |err| {logits.MaxAbsError:G3}");
    }

    /// <summary>A two-layer MLP of Gemms: [8, 64] → Gemm(transB = 1, W [128, 64]) → Relu → Gemm(transB = 0, W [128, 32]) → y.</summary>
    private string GemmMlp()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var shape = new Quantc.Onnx.Proto.TensorShapeProto();
        foreach (long d in new long[] { 8, 64 }) shape.Dim.Add(new Quantc.Onnx.Proto.TensorShapeProto.Types.Dimension { DimValue = d });
        var x = g.AddInput("x", new Quantc.Onnx.Proto.TypeProto { TensorType = new() { ElemType = 1, Shape = shape } });
        var rng = new Random(5);
        Value Init(string name, long[] dims) => g.AddInitializer(Tensor.FromFloats(name, dims,
            Enumerable.Range(0, (int)(dims[0] * (dims.Length > 1 ? dims[1] : 1))).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.2f).ToArray()), name);
        var fc1 = g.AddNode("Gemm", [x, Init("fc1.weight", [128, 64]), Init("fc1.bias", [128])], name: "/fc1/Gemm");
        fc1.SetAttribute("transB", 1L);
        var relu = g.AddNode("Relu", [fc1.Output], name: "/act/Relu");
        var fc2 = g.AddNode("Gemm", [relu.Output, Init("fc2.weight", [128, 32]), Init("fc2.bias", [32])], name: "/fc2/Gemm", outputNames: ["y"]);
        g.AddOutput(fc2.Output);
        var path = Path.Combine(_dir.FullName, $"gemm-{Guid.NewGuid():N}.onnx");
        m.Save(path);
        return path;
    }

    /// <summary>
    /// Two LayerNorm-fed MatMuls that read the same (tied) weight: fold_norm and smooth leave those norms alone and say
    /// why (folding into one reader would change the other), the quantizing recipe still quantizes both layers, and
    /// nothing fails.
    /// </summary>
    [Theory]
    [InlineData("passes: [fold_norm]")]
    [InlineData("passes: [smooth]")]
    [InlineData("passes: [fold_norm, smooth, {quantize: {weights: int8, activations: uint8}}, ranges, weights, lower_qdq]")]
    public void TiedWeightsAreUntiedWhereAPassRewritesThem(string recipe)
    {
        string path;
        {
            using var m = Model.Create(opset: 17);
            var g = m.Graph;
            var shape = new Quantc.Onnx.Proto.TensorShapeProto();
            foreach (long d in new long[] { 6, 16 }) shape.Dim.Add(new Quantc.Onnx.Proto.TensorShapeProto.Types.Dimension { DimValue = d });
            var x = g.AddInput("x", new Quantc.Onnx.Proto.TypeProto { TensorType = new() { ElemType = 1, Shape = shape } });
            var rng = new Random(2);
            float[] R(int n, float scale, float offset = 0) => Enumerable.Range(0, n).Select(_ => offset + (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
            var w = g.AddInitializer(Tensor.FromFloats("shared.weight", [16, 16], R(256, 0.3f)));
            Value Block(Value input, int i)
            {
                var ln = g.AddNode("LayerNormalization", [input, g.AddInitializer(Tensor.FromFloats($"ln{i}.weight", [16], R(16, 0.5f, 1))), g.AddInitializer(Tensor.FromFloats($"ln{i}.bias", [16], R(16, 0.2f)))], name: $"/ln{i}/LayerNormalization");
                ln.SetAttribute("axis", -1L);
                return g.AddNode("MatMul", [ln.Output, w], name: $"/fc{i}/MatMul").Output;
            }
            var y = Block(g.AddNode("Relu", [Block(x, 1)], name: "/act/Relu").Output, 2);
            g.RenameValue(y, "y");
            g.AddOutput(y);
            path = Path.Combine(_dir.FullName, $"tied-{Guid.NewGuid():N}.onnx");
            m.Save(path);
        }
        using var original = Model.Load(path);
        using var model = Model.Load(path);
        var data = DataLoader.Load(model, "random", new DataOptions { SplitDocuments = false, MaxSamples = 8 }).Samples;
        var ctx = TestCompiler.Compile(model, recipe, data).Context;
        foreach (var l in ctx.Log) log.WriteLine(l);
        Assert.Contains(ctx.Log, l => l.Contains("ln1 not folded: a reader's weight is shared", StringComparison.Ordinal)
            || l.EndsWith("ln1 not smoothed: a reader's weight is shared", StringComparison.Ordinal));
        // Both layers quantize the tied weight alike (neither pass rewrote it): lower_qdq stores it once, both read one DequantizeLinear.
        if (recipe.Contains("lower_qdq", StringComparison.Ordinal))
            Assert.Equal(1, model.Graph.Nodes.Count(n => n.Is("DequantizeLinear") && n.Inputs[0]!.IsInitializer));
        var r = Verifier.Run(original, model, DataLoader.Load(original, "random", new DataOptions { SplitDocuments = false, MaxSamples = 4, Seed = 3 }).Samples, null, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single().SqnrDb;
        log.WriteLine($"tied weights, {recipe}: SQNR {sqnr:0.0} dB");
        Assert.True(recipe.Contains("lower_qdq", StringComparison.Ordinal) ? sqnr > 25 : sqnr > 100, $"SQNR {sqnr:0.0} dB");
    }

    /// <summary>Gemm layers (transB = 1 and 0) lower to QDQ for int8 W8A8 and int4 weight-only, and run in ONNX Runtime close to the float model.</summary>
    [Theory]
    [InlineData("w8a8", 30.0)]
    [InlineData("w4a16-rtn", 15.0)]
    public void GemmLayersAreLowered(string recipe, double floorDb)
    {
        string path = GemmMlp();
        using var original = Model.Load(path);
        using var m = Model.Load(path);
        var data = DataLoader.Load(m, "random", new DataOptions { SplitDocuments = false, MaxSamples = 8 }).Samples;
        TestCompiler.Compile(m, recipe, data);
        // The weights' DequantizeLinear (static w8a8 also stores each bias C as int32 behind one, for ONNX Runtime's QGemm).
        Assert.Equal(2, m.Graph.AllNodes().Count(n => n.OpType == "DequantizeLinear" && n.Inputs[0]!.IsInitializer && n.Inputs[0]!.ElementType != 6));
        var r = Verifier.Run(original, m, DataLoader.Load(original, "random", new DataOptions { SplitDocuments = false, MaxSamples = 4, Seed = 9 }).Samples, null, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single().SqnrDb;
        log.WriteLine($"Gemm MLP {recipe}: SQNR {sqnr:0.0} dB");
        Assert.True(sqnr > floorDb, $"SQNR {sqnr:0.0} dB ≤ {floorDb} dB");
    }

    [Fact]
    public void EveryBuiltInRecipeParsesAndInstantiates()
    {
        var compiler = TestCompiler.Compiler;
        foreach (var name in Builtins.Recipes.Keys) Assert.NotEmpty(compiler.Instantiate(Builtins.Recipe(name)));
        Assert.Throws<Quantc.Onnx.BadInputException>(() => Builtins.Recipe("no-such-recipe"));
    }

    [Fact]
    public void SpikeMixedKeepsTheSpikeLayersAndSaysWhy()
    {
        using var m = Load("llama");
        var ctx = TestCompiler.Compile(m, "spike-mixed", Data(m, "calib.txt", 8).Samples).Context;
        var kept = ctx.Plan.Layers.Where(p => p.WeightFormat == NumberFormat.Fp16).Select(p => p.Name).ToList();
        Assert.Contains("model.layers.1.mlp.down_proj", kept); // the reference model's spike layers (models/README.md)
        Assert.All(kept, k => Assert.EndsWith("down_proj", k));
        Assert.Contains(ctx.Plan.Layers.Single(p => p.Name == "model.layers.1.mlp.down_proj").Reasons, r => r.Contains("spike ratio", StringComparison.Ordinal));
    }
}
