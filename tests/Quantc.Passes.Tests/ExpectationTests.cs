using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Models;
using Quantc.Onnx;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// A recipe's expected accuracy (its <c>expect:</c> or its narrowest format), the warning when a verified compile is far
/// above it, and the attribution of the error to the recipe's parts — on the trained LLaMA of ../shared/real, where a
/// hard-clipped 4-bit cache must be named as the cost and int4 round-to-nearest weights beside an 8-bit cache must be.
/// </summary>
public sealed class ExpectationTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-expect");

    public void Dispose() => _dir.Delete(recursive: true);

    [Theory]
    [InlineData("w8a8", 0.03, 20, "int8 weights")]
    [InlineData("w6a6-outliertune", 0.08, 14, "int6 weights")]
    [InlineData("w4a16-rtn", 0.15, 10, "int4 weights")]
    [InlineData("w4a8-kv4", 0.15, 10, "int4 weights")]
    [InlineData("fireq", 0.15, 10, "int4 weights")]
    public void BuiltinRecipesExpectWhatTheirNarrowestFormatCosts(string recipe, double ppl, double db, string basis)
    {
        var e = Expectations.Of(Builtins.Recipe(recipe));
        Assert.Equal(ppl, e.PerplexityIncrease);
        Assert.Equal(db, e.SqnrDb);
        Assert.Contains(basis, e.Basis);
    }

    [Fact]
    public void ARecipeStatesItsExpectation()
    {
        var r = Recipe.Parse("name: x\nexpect: { perplexity_increase: 0.02, sqnr_db: 30 }\npasses: [quantize]", "x.yaml");
        Assert.Equal(new RecipeExpectation(0.02, 30, "the recipe's expect:"), Expectations.Of(r));
        Assert.Contains("unknown key 'top1'",
            Assert.Throws<BadInputException>(() => Recipe.Parse("expect: { top1: 0.9 }\npasses: [quantize]", "x.yaml")).Message);
        Assert.Contains("must be a number",
            Assert.Throws<BadInputException>(() => Recipe.Parse("expect: { sqnr_db: loud }\npasses: [quantize]", "x.yaml")).Message);
        Assert.Contains("must be a mapping",
            Assert.Throws<BadInputException>(() => Recipe.Parse("expect: 3\npasses: [quantize]", "x.yaml")).Message);
    }

    [Fact]
    public void FarIsTwiceTheExpectedPerplexityRiseOrSixDecibelsBelowTheExpectedSqnr()
    {
        var w8 = Builtins.Recipe("w8a8");  // +3 %, 20 dB
        VerifyReport Report(double ppl, double db, bool logits) =>
            new(8, [new OutputError("logits", db, 0.99, 1, 100)], logits ? new LogitsMetrics(0.9, 3.0, ppl, 1000) : null, []);
        Assert.Null(Expectations.Miss(w8, Report(3.0 * 1.059, 14.1, true)));
        var ppl = Expectations.Miss(w8, Report(3.0 * 1.061, 40, true))!;
        Assert.Contains("far above what recipe w8a8 is expected to cost: +3 %", ppl.Text);
        Assert.True(ppl.Perplexity);
        Assert.Null(Expectations.Miss(w8, Report(9, 14.1, false)));
        var db = Expectations.Miss(w8, Report(9, 13.9, false))!;
        Assert.Contains("far below what recipe w8a8 is expected to keep: 20 dB", db.Text);
        Assert.False(db.Perplexity);
        Assert.False(Expectations.Miss(w8, Report(3.0, 13.9, true))!.Perplexity);  // logits far off although perplexity is not
    }

    [Fact]
    public void AHardClippedFourBitCacheIsNamedAsTheCost()
    {
        string parts = Attribute("""
            name: kv-clipped
            passes:
              - quantize: { weights: int8, activations: int8, mode: dynamic }
              - weights: { method: rtn }
              - lower_qdq
              - quantize_kv: { bits: 4, clip_ratio: 0.3 }
            """, out string? miss);
        Assert.Contains("far above what recipe kv-clipped is expected to cost: +15 % (its narrowest format, 4-bit KV cache", miss);
        Assert.Contains("weights +", parts);
        Assert.Contains("activations ", parts);
        Assert.EndsWith("the KV cache costs most", parts);
    }

    [Fact]
    public void RoundedInt4WeightsBesideAnEightBitCacheAreNamedAsTheCost()
    {
        string parts = Attribute("""
            name: w4-kv8
            expect: { perplexity_increase: 0.001 }
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 128, activations: fp32 }
              - weights: { method: rtn }
              - lower_qdq
              - quantize_kv: { bits: 8 }
            """, out string? miss);
        Assert.Contains("(the recipe's expect:; warned beyond +0.2 %)", miss);
        Assert.DoesNotContain("activations", parts);
        Assert.EndsWith("the weights cost most", parts);
    }

    private static readonly DataOptions Eight = new() { SequenceLength = 128, MaxSamples = 8 };

    /// <summary>PrefixQuant's prefix starts with BOS. Verify compares the compiled model against the original reading the same
    /// prefix first (PrefixAlignment), so the prefix — a float rewrite — costs nothing even on text that brings its own BOS too
    /// (the model then reads two on both sides); the rounding is what the attribution names.</summary>
    [Fact]
    public void APrefixIsNotMeasuredAsError()
    {
        string parts = Attribute("""
            name: prefix-w8
            expect: { perplexity_increase: 0.0001 }
            passes:
              - prefix_tokens
              - quantize: { weights: int8, activations: int8, mode: dynamic }
              - weights: { method: rtn }
              - lower_qdq
            """, out _);
        Assert.StartsWith("the error by part of the recipe (perplexity rise, each part added in turn): float rewrites (prefix_tokens) +0 %,",
            parts);
        Assert.DoesNotContain("the float rewrites cost most", parts);
    }

    /// <summary>Compiles the trained LLaMA with <paramref name="yaml"/>, verifies it and attributes its error.</summary>
    private string Attribute(string yaml, out string? missed)
    {
        string real = Quantc.Tests.Shared.RealModels.Dir();
        string src = Path.Combine(real, "babyllama-tok105");
        string model = Path.Combine(_dir.FullName, "llama.onnx");
        ReferenceModels.BuildAndSaveFromCheckpoint("llama", Path.Combine(src, "config.json"), Path.Combine(src, "model.safetensors"),
            "torch", model);
        File.Copy(Path.Combine(src, "tokenizer.model"), Path.Combine(_dir.FullName, "tokenizer.model"));
        string text = File.ReadAllText(Path.Combine(real, "text", "tinystories-valid.txt"));
        File.WriteAllText(Path.Combine(_dir.FullName, "calib.txt"), text[..60_000]);
        File.WriteAllText(Path.Combine(_dir.FullName, "eval.txt"), text[^40_000..]);
        var recipe = Recipe.Parse(yaml, "test.yaml");
        using var m = Quantc.Ir.Model.Load(model);
        var options = new CompileOptions
        {
            Calibration = DataLoader.Load(m, Path.Combine(_dir.FullName, "calib.txt"), Eight),
            HeldOut = DataLoader.Load(m, Path.Combine(_dir.FullName, "eval.txt"), Eight),
            OutputPath = Path.Combine(_dir.FullName, "q.onnx"),
            OriginalPath = model,
        };
        using var result = TestCompiler.Compiler.Compile(m, recipe, options);
        var miss = Expectations.Miss(recipe, result.Verify!);
        missed = miss?.Text;
        log.WriteLine(missed ?? "(no miss)");
        Assert.NotNull(miss);
        int lowered = result.Context.Plan.Layers.Count(p => p.LoweredBy is not null);
        string parts = Expectations.Attribute(recipe, model, options, result.Verify!, lowered, miss.Perplexity);
        log.WriteLine(parts);
        return parts;
    }
}
