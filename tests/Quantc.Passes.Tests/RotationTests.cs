using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Models;
using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>QuaRot's rotations (R1 rotate_residual, R2 rotate_head, R4 online_hadamard): function preservation in ONNX Runtime, refusals, the rotation matrices.</summary>
public sealed class RotationTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-rotation");

    public void Dispose() => _dir.Delete(recursive: true);

    private Model Load(string flavor, string size = "tiny", bool massive = true) => LoadLlama(_dir, flavor, size, massive);

    private Model SaveReload(Model m) => Model.Load(Save(_dir, m));

    private static PassContext Run(Model m, string recipeYaml) => RunRecipe(m, recipeYaml);

    /// <summary>x·Qᵀ head by head: the value cache back in the original basis.</summary>
    private static float[] Unrotate(float[] v, double[] q, int hd)
    {
        var r = new float[v.Length];
        for (int o = 0; o < v.Length; o += hd)
            for (int i = 0; i < hd; i++)
            {
                double acc = 0;
                for (int j = 0; j < hd; j++) acc += v[o + j] * q[i * hd + j];
                r[o + i] = (float)acc;
            }
        return r;
    }

    private const string R1 = "passes: [fold_norm, rotate_residual]";
    private const string R2 = "passes: [rotate_head]";
    // R4 where the tiny model has a Hadamard order: o_proj (128); down_proj (344 = 2·172) is skipped until order 172 exists.
    private const string Chain = "passes: [fold_norm, rotate_residual, rotate_head, {online_hadamard: {layers: '(down_proj|o_proj)$'}}]";
    private const string ChainPortable = "passes: [fold_norm, rotate_residual, rotate_head, {online_hadamard: {layers: '(down_proj|o_proj)$', portable: true}}]";

    public static TheoryData<string, string, bool, double> Chains => new()
    {
        // R2 alone holds 1e-5 (measured ≤ 7e-7).
        { "torch", R2, true, 1e-5 }, { "ortgenai", R2, true, 1e-5 },
        // R1 stores dense rotated weights, each rounded once to float32, and the tiny reference network
        // amplifies that rounding: 1.7–2.5e-5 without the massive activations, 3–6e-5 with them (the
        // rotation spreads the ~450-valued massive residual channels over all 128 channels, every float32
        // write rounds relative to that magnitude, and the cancel layer's subtraction leaves the rounding in
        // channels that are O(1) on other tokens; worst on BOS and "\n", the trigger tokens, ~1e-6 on
        // ordinary ones). The same passes with the rotation cut down to its ±1 diagonal (exact in float32)
        // measured ≤ 7e-7 without and ≤ 7.4e-6 with them: the wiring is exact, the excess is rounding,
        // amplified by the trigger flag's readers (RotationsHold1e5WithoutTheFlagReaders: ≤ 9e-7 without them).
        // It is float32 noise, not a change of function: the float32 original itself is 2.5–3.9e-5 from its float64
        // evaluation, and the rotated model computes the exact function within 5e-6 (see
        // RotatedModelsComputeTheExactFunctionAsWellAsTheOriginal).
        { "torch", R1, false, 4e-5 }, { "ortgenai", R1, false, 4e-5 },
        { "torch", Chain, false, 4e-5 }, { "ortgenai", Chain, false, 4e-5 }, { "ortgenai", ChainPortable, false, 4e-5 },
        { "torch", R1, true, 1e-4 }, { "ortgenai", R1, true, 1e-4 },
        { "torch", Chain, true, 1e-4 }, { "ortgenai", Chain, true, 1e-4 }, { "ortgenai", ChainPortable, true, 1e-4 },
    };

    /// <summary>
    /// The rotations leave the logits and the key cache unchanged (max relative error over 4 held-out
    /// sequences of 64 tokens, ONNX Runtime, before vs after), and the value cache equals the original's
    /// once R2's per-head rotation is undone.
    /// </summary>
    [Theory]
    [MemberData(nameof(Chains))]
    public void RotationsPreserveTheFunction(string flavor, string recipe, bool massive, double limit)
    {
        using var original = Load(flavor, massive: massive);
        using var m = Load(flavor, massive: massive);
        var ctx = Run(m, recipe);
        foreach (var line in ctx.Log) log.WriteLine(line);
        using var compiled = SaveReload(m);
        bool r2 = recipe.Contains("rotate_head", StringComparison.Ordinal);
        if (r2) Assert.Contains(compiled.Metadata, kv => kv.Key == RotateHeadPass.CacheMetadataKey);
        if (recipe.Contains("online_hadamard", StringComparison.Ordinal)) Assert.Contains(ctx.Log, l => l.StartsWith("online_hadamard: model.layers.0.self_attn.o_proj", StringComparison.Ordinal));
        var q = Rotation.Create(32, 1).Matrix();   // rotate_head's default seed, head size 32

        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var worst = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var tokens in EvalTokens(original, 4, 64))
        {
            var sample = CalibrationInputs.FromTokens(original.Graph, tokens);
            var oa = Outputs(a, sample);
            var ob = Outputs(b, sample);
            foreach (var (name, va) in oa)
            {
                var vb = ob[name];
                if (r2 && name.EndsWith(".value", StringComparison.Ordinal)) vb = Unrotate(vb, q, 32);
                string kind = name == "logits" ? "logits" : name.EndsWith(".value", StringComparison.Ordinal) ? "values" : "keys";
                worst[kind] = Math.Max(worst.GetValueOrDefault(kind), MaxRelErr(va, vb));
            }
        }
        foreach (var (kind, e) in worst)
        {
            log.WriteLine($"{flavor} {recipe} (massive activations: {massive}): {kind} max rel err {e:E2}");
            Assert.True(e <= limit, $"{kind}: max relative error {e:E3} > {limit:E0}");
        }
    }

    /// <summary>
    /// Where R1's excess over 1e-5 comes from: the reference network's trigger flag, a residual channel that is
    /// exactly zero on most tokens and that no layer writes (its writer columns are zero), is read by gate/up
    /// rows that amplify it 6–30×. In the rotated basis every write is dense, so each float32-rounded write
    /// leaks a little into the flag direction, which those readers amplify — the unrotated network cannot
    /// leak there at all. With the flag and its readers removed (TriggerFlag.Remove(readers: true)) R1 and
    /// the whole chain R1–R4 with R3 hold 1e-5 on logits and on both caches (measured ≤ 9e-7 for R1). The
    /// fused weights are already computed in double and rounded to float32 once.
    /// </summary>
    [Theory]
    [InlineData("torch", R1)]
    [InlineData("ortgenai", R1)]
    [InlineData("torch", "passes: [fold_norm, rotate_residual, rotate_head, rotate_qk, {online_hadamard: {layers: '(down_proj|o_proj)$'}}]")]
    [InlineData("ortgenai", "passes: [fold_norm, rotate_residual, rotate_head, {rotate_qk: {portable: true}}, {online_hadamard: {layers: '(down_proj|o_proj)$', portable: true}}]")]
    public void RotationsHold1e5WithoutTheFlagReaders(string flavor, string recipe)
    {
        Model Plain()
        {
            var m = Load(flavor);
            TriggerFlag.Remove(m, readers: true);
            using (m) return SaveReload(m);
        }
        using var original = Plain();
        using var m = Plain();
        Run(m, recipe);
        using var compiled = SaveReload(m);
        var rot = CacheTransforms.Of(compiled.Metadata);
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var worst = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var tokens in EvalTokens(original, 4, 64))
        {
            var sample = CalibrationInputs.FromTokens(original.Graph, tokens);
            Compare(Outputs(a, sample), Outputs(b, sample), rot, worst);
        }
        foreach (var (kind, e) in worst)
        {
            log.WriteLine($"{flavor} {recipe} (no trigger flag, no flag readers): {kind} max rel err {e:E2}");
            Assert.True(e <= 1e-5, $"{kind}: max relative error {e:E3} > 1e-5");
        }
    }

    /// <summary>
    /// The same rotations judged against the exact function: the original and the rotated model both evaluated in
    /// float64 (<see cref="Quantc.Core.Verification.Float64Model"/>) on 4 held-out sequences, logits. On the reference network with its
    /// massive-activation circuit the float32 original is itself ~4e-5 (max relative error) from its own float64
    /// evaluation, so two float32 graphs that compute the same function differently cannot agree to 1e-5 (the Chains
    /// limits above); what function preservation can promise is that (a) the rotated model as stored — its float32
    /// weights — computes the original function within 1e-5 in exact arithmetic (torch flavor; the ortgenai
    /// flavor's contrib kernels have no float64), and (b) in float32 it is about as far from the exact function
    /// as the original float32 model is (within 2×: float32 noise is one random draw per model; measured 0.8–1.7×).
    /// (a) needs activation-aware rounding of the readers' rotated weights (calibration data given): nearest
    /// rounding measured 1.5e-5 there.
    /// </summary>
    [Theory]
    [InlineData("torch", R1)]
    [InlineData("torch", "passes: [fold_norm, rotate_residual, rotate_head, {online_hadamard: {layers: '(down_proj|o_proj)$', portable: true}}]")]
    [InlineData("ortgenai", R1)]
    [InlineData("ortgenai", "passes: [fold_norm, rotate_residual, rotate_head, {online_hadamard: {layers: '(down_proj|o_proj)$', portable: true}}]")]
    public void RotatedModelsComputeTheExactFunctionAsWellAsTheOriginal(string flavor, string recipe)
    {
        Model Exact(Model m)
        {
            var copy = Model.Load(Save(_dir, m));
            Quantc.Core.Verification.Float64Model.Convert(copy);
            return copy;
        }
        // The exact reference is the torch export in float64: the ortgenai flavor (contrib ops, float32 kernels only)
        // is the same network with the same weights, which the noise bound below checks as well.
        using var torch = Load("torch");
        using var torchExact = Exact(torch);
        using var original = Load(flavor);
        bool exactRuns = flavor == "torch";
        var calibration = Calibration(original, 4);
        var tokens = EvalTokens(original, 4, 64);
        using var s32 = OrtModel.CreateSession(original);
        using var s64 = OrtModel.CreateSession(torchExact);
        var baseline = tokens.Select(t => CalibrationInputs.FromTokens(original.Graph, t)).Select(x => (x, Exact: Outputs(s64, x)["logits"], F32: Outputs(s32, x)["logits"])).ToList();
        double originalNoise = baseline.Max(b => MaxRelErr(b.Exact, b.F32));
        log.WriteLine($"{flavor}: the float32 original is {originalNoise:E2} from the exact function");
        Assert.True(originalNoise < 1e-4, $"{flavor} does not compute the torch export's function: {originalNoise:E3}");

        var stored = new Dictionary<string, double>();
        foreach (var rounding in new[] { "nearest", "activation_aware" })
        {
            using var m = Load(flavor);
            var ctx = RunRecipe(m, recipe.Replace("rotate_residual", $"{{rotate_residual: {{rounding: {rounding}}}}}", StringComparison.Ordinal), calibration);
            foreach (var l in ctx.Log.Where(l => l.StartsWith("rotate_residual", StringComparison.Ordinal))) log.WriteLine(l);
            if (rounding != "nearest") Assert.Contains(ctx.Log, l => l.StartsWith("rotate_residual: activation-aware float32 rounding", StringComparison.Ordinal));
            using var compiled = SaveReload(m);
            using var r32 = OrtModel.CreateSession(compiled);
            double float32 = baseline.Max(b => MaxRelErr(b.Exact, Outputs(r32, b.x)["logits"]));
            double vsOriginal = baseline.Max(b => MaxRelErr(b.F32, Outputs(r32, b.x)["logits"]));
            string function = "";
            if (exactRuns)
            {
                using var compiledExact = Exact(compiled);
                using var r64 = OrtModel.CreateSession(compiledExact);
                stored[rounding] = baseline.Max(b => MaxRelErr(b.Exact, Outputs(r64, b.x)["logits"]));
                function = $"stored function vs exact {stored[rounding]:E2}; ";
            }
            log.WriteLine($"{flavor} {recipe}, {rounding} rounding: {function}float32 run vs exact {float32:E2} " +
                $"(the float32 original: {originalNoise:E2}); float32 vs float32 original {vsOriginal:E2}");
            Assert.True(float32 <= 2 * originalNoise, $"{rounding}: the rotated float32 model is {float32:E3} from the exact function, the original {originalNoise:E3}");
        }
        if (!exactRuns) return;
        Assert.True(stored["activation_aware"] <= 1e-5, $"activation-aware rounding: the stored rotated model computes the original function within {stored["activation_aware"]:E3} only");
        Assert.True(stored["activation_aware"] < stored["nearest"], "activation-aware rounding does not beat nearest rounding");
    }

    /// <summary>
    /// The ortgenai flavor cannot run in float64 (contrib kernels), but R1 gives it the torch flavor's weights bit for bit
    /// (same network, same calibration, same rounding), so it stores the same function, within 1e-5 of the original's.
    /// </summary>
    [Theory]
    [InlineData("nearest")]
    [InlineData("activation_aware")]
    public void BothFlavorsGetTheSameRotatedWeights(string rounding)
    {
        Dictionary<string, float[]> Rotated(string flavor)
        {
            using var m = Load(flavor);
            RunRecipe(m, $"passes: [fold_norm, {{rotate_residual: {{rounding: {rounding}}}}}]", Calibration(m, 4));
            var map = Quantc.Ir.Analysis.LayerAnalysis.Analyze(m.Graph);
            var w = map.Linears.ToDictionary(l => l.Name, l => l.Weight.Initializer!.ToFloat32());
            w["embedding"] = m.Graph["model.embed_tokens.weight"].Initializer!.ToFloat32();
            return w;
        }
        var torch = Rotated("torch");
        var ortgenai = Rotated("ortgenai");
        Assert.Equal(torch.Keys.Order(), ortgenai.Keys.Order());
        foreach (var (name, w) in torch) Assert.True(w.AsSpan().SequenceEqual(ortgenai[name]), $"{name}: the flavors' rotated weights differ");
    }

    /// <summary>R4 on down_proj itself, where the MLP width has a Hadamard order (small: 1408 = 32·44), after R1 and R2.</summary>
    [Fact]
    public void FullChainOnTheSmallModelRotatesDownProj()
    {
        using var original = Load("torch", "small");
        using var m = Load("torch", "small");
        var ctx = Run(m, "passes: [fold_norm, rotate_residual, rotate_head, online_hadamard]");
        Assert.Contains(ctx.Log, l => l.StartsWith("online_hadamard: model.layers.0.mlp.down_proj (K = 1408)", StringComparison.Ordinal));
        AssertLogitsKept(original, m, "small torch R1+R2+R4(down_proj)", 1e-4);   // R1's float32 rounding, see Chains
    }

    /// <summary>Runs <paramref name="original"/> and the rewritten model (saved and reloaded) on 64 held-out tokens; logits within <paramref name="limit"/> (max relative error).</summary>
    private void AssertLogitsKept(Model original, Model rewritten, string what, double limit)
    {
        using var compiled = SaveReload(rewritten);
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 64)[0]);
        double e = MaxRelErr(Outputs(a, sample)["logits"], Outputs(b, sample)["logits"]);
        log.WriteLine($"{what}: logits max rel err {e:E2}");
        Assert.True(e <= limit, $"{what}: logits max relative error {e:E3} > {limit:E0}");
    }

    /// <summary>R1 also applies to Mamba (RMSNorm pre-norm, in_proj reads, out_proj writes the residual): logits and states unchanged.</summary>
    [Fact]
    public void ResidualRotationPreservesMamba()
    {
        Model Mamba()
        {
            var path = Path.Combine(_dir.FullName, $"mamba-{Guid.NewGuid():N}.onnx");
            ReferenceModels.BuildAndSave("mamba", "tiny", 0, "torch", path);
            return Model.Load(path);
        }
        using var original = Mamba();
        using var m = Mamba();
        var ctx = Run(m, R1);
        Assert.Contains(ctx.Log, l => l.StartsWith("rotate_residual: randomised Hadamard 128", StringComparison.Ordinal));
        using var compiled = SaveReload(m);
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 64)[0]);
        var oa = Outputs(a, sample);
        var ob = Outputs(b, sample);
        foreach (var (name, va) in oa)
        {
            double e = MaxRelErr(va, ob[name]);
            if (name == "logits") log.WriteLine($"mamba R1: logits max rel err {e:E2}");
            Assert.True(e <= 1e-5, $"{name}: max relative error {e:E3}");
        }
    }

    /// <summary>Decoding with the rotated value cache the model returned gives the original model's next-token logits.</summary>
    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void DecodingWithTheRotatedCacheMatches(string flavor)
    {
        using var original = Load(flavor);
        using var m = Load(flavor);
        Run(m, "passes: [fold_norm, rotate_residual, rotate_head]");
        using var compiled = SaveReload(m);
        var tokens = EvalTokens(original, 1, 17)[0];
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var prefill = CalibrationInputs.FromTokens(original.Graph, tokens.AsSpan(0, 16));
        var pa = Outputs(a, prefill);
        var pb = Outputs(b, prefill);
        CalibrationSample Step(Dictionary<string, float[]> present)
        {
            var s = new CalibrationSample();
            s.Inputs["input_ids"] = (new[] { tokens[16] }, [1, 1]);
            s.Inputs["attention_mask"] = (Enumerable.Repeat(1L, 17).ToArray(), [1, 17]);
            s.Inputs["position_ids"] = (new[] { 16L }, [1, 1]);
            foreach (var (name, data) in present.Where(kv => kv.Key.StartsWith("present.", StringComparison.Ordinal)))
                s.Inputs["past_key_values." + name["present.".Length..]] = (data, [1, 2, 16, 32]);
            return s;
        }
        double worst = MaxRelErr(Outputs(a, Step(pa))["logits"], Outputs(b, Step(pb))["logits"]);
        log.WriteLine($"{flavor}: decode step logits max rel err {worst:E2}");
        Assert.True(worst <= 1e-4, $"decode logits: max relative error {worst:E3}");   // R1's float32 rounding, see Chains
    }

    /// <summary>quantc verify reads the value-cache rotation from the metadata and compares the cache in the original basis.</summary>
    [Fact]
    public void VerifyComparesTheRotatedValueCacheInTheOriginalBasis()
    {
        using var original = Load("ortgenai");
        using var m = Load("ortgenai");
        Run(m, R2);
        using var compiled = SaveReload(m);
        var toks = EvalTokens(original, 2, 64);
        var samples = toks.Select(t => CalibrationInputs.FromTokens(original.Graph, t)).ToList();
        var r = Quantc.Core.Verification.Verifier.Run(original, compiled, samples, toks, new Quantc.Core.Verification.VerifyOptions { PerLayer = false });
        foreach (var o in r.Outputs.Where(o => o.Name.StartsWith("present.", StringComparison.Ordinal)))
        {
            log.WriteLine($"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
            Assert.True(o.SqnrDb > 100, $"{o.Name}: SQNR {o.SqnrDb:0.0} dB");
        }
    }

    [Fact]
    public void ResidualRotationRefusesUnfoldedNormsWithTheReason()
    {
        using var m = Load("torch");
        var e = Assert.Throws<BadInputException>(() => Run(m, "passes: [rotate_residual]"));
        Assert.Contains("run fold_norm before rotate_residual", e.Message, StringComparison.Ordinal);
        using var opt = Model.Load(SaveOpt());
        var e2 = Assert.Throws<BadInputException>(() => Run(opt, "passes: [fold_norm, rotate_residual]"));
        log.WriteLine(e2.Message);
        Assert.StartsWith("rotate_residual: cannot rotate the residual stream: ", e2.Message, StringComparison.Ordinal);
    }

    private string SaveOpt()
    {
        var path = Path.Combine(_dir.FullName, $"opt-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave("opt", "tiny", 0, "torch", path);
        return path;
    }

    /// <summary>
    /// A tied lm_head — Gemm(x, embedding, transB = 1) on the same initializer the Gather reads, tokens
    /// flattened by a Reshape — is rotated once, with the table: Qᵀ·Eᵀ = (E·Q)ᵀ.
    /// </summary>
    [Fact]
    public void TiedLmHeadIsRotatedWithTheEmbedding()
    {
        Model Tied()
        {
            var m = Load("torch");
            var g = m.Graph;
            var head = g.Nodes.Single(n => n.Name == "/lm_head/MatMul");
            var table = g["model.embed_tokens.weight"];
            var norm = g["model.norm.weight"];   // γ = 1: fold_norm cannot fold into a weight the embedding shares
            g.SetInitializer(norm, Tensor.FromFloats(norm.Name, norm.Initializer!.Dims, Enumerable.Repeat(1f, (int)norm.Initializer.ElementCount).ToArray()));
            var logits = head.Output;
            g.RenameValueUnique(logits, "logits_old");
            var flat = g.AddNode("Reshape", [head.Inputs[0], g.AddInitializer(Tensor.FromValues<long>("flat_shape", 7, [2], [-1L, 128L]))], name: "/lm_head/flatten", before: head);
            var gemm = g.AddNode("Gemm", [flat.Output, table], name: "/lm_head/Gemm", before: head);
            gemm.SetAttribute("transB", 1L);
            var back = g.AddNode("Reshape", [gemm.Output, g.AddInitializer(Tensor.FromValues<long>("logits_shape", 7, [3], [1L, -1L, 257L]))], name: "/lm_head/unflatten", outputNames: ["logits"], before: head);
            g.SetOutput(g.Outputs.ToList().IndexOf(logits), back.Output);
            g.RemoveNode(head);
            g.RemoveDeadCode();
            using (m) return SaveReload(m);
        }
        using var original = Tied();
        using var m = Tied();
        Assert.DoesNotContain(m.Graph.Initializers, v => v.Name == "lm_head.weight");
        var ctx = Run(m, R1);
        Assert.Contains(ctx.Plan.Layers, p => p.Transforms.Contains("R1: tied to the rotated embedding"));
        AssertLogitsKept(original, m, "tied lm_head", 1e-4);   // R1's float32 rounding, see Chains
    }

    [Theory]
    [InlineData(128, true)]
    [InlineData(32, true)]
    [InlineData(76, false)]
    [InlineData(100, false)]
    public void RotationsAreOrthogonalAndSeeded(int d, bool hadamard)
    {
        var r = Rotation.Create(d, 7);
        Assert.Equal(hadamard, r.IsHadamard);
        var q = r.Matrix();
        double worst = 0;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
            {
                double dot = 0;
                for (int k = 0; k < d; k++) dot += q[i * d + k] * q[j * d + k];
                worst = Math.Max(worst, Math.Abs(dot - (i == j ? 1 : 0)));
            }
        Assert.True(worst < 1e-12, $"Q·Qᵀ − I: {worst:E2}");
        Assert.Equal(q, Rotation.Create(d, 7).Matrix());
        Assert.NotEqual(q, Rotation.Create(d, 8).Matrix());
        if (hadamard)   // the randomised Hadamard: every entry ±1/√d
            Assert.All(q, x => Assert.Equal(1 / Math.Sqrt(d), Math.Abs(x), 12));
    }
}
