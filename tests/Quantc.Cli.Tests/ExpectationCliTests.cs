namespace Quantc.Cli.Tests;

/// <summary>compile warns when the verified error is far above the recipe's expectation (on screen and in the report), and
/// --no-attribution leaves out the compiles that tell which part costs most.</summary>
public sealed class ExpectationCliTests() : FolderTest("quantc-expect")
{
    [Fact]
    public void AMissedExpectationIsAWarningOnScreenAndInTheReport()
    {
        File.WriteAllText(P("strict.yaml"), """
            name: strict
            expect: { perplexity_increase: 0, sqnr_db: 200 }
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: fp32 }
              - weights: { method: rtn }
              - lower_qdq
            """);
        var (code, stdout, stderr) = Run("compile", Cli.DefaultModelPath(), "--recipe", P("strict.yaml"), "-o", P("q.onnx"),
            "--no-attribution");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("quantc: warning: verify: output 'logits' SQNR ", stderr);
        Assert.Contains("far below what recipe strict is expected to keep: 200 dB (the recipe's expect:; warned below 194 dB)", stderr);
        Assert.DoesNotContain("compiling the recipe's parts again", stderr);
        Assert.Contains("far below what recipe strict", File.ReadAllText(P("q.report.json")));
    }

    [Fact]
    public void AWeightOnlyRecipeSaysItsWeightsAreTheWholeError()
    {
        File.WriteAllText(P("strict.yaml"), """
            name: strict
            expect: { sqnr_db: 200 }
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: fp32 }
              - weights: { method: rtn }
              - lower_qdq
            """);
        var (code, stdout, stderr) = Run("compile", Cli.DefaultModelPath(), "--recipe", P("strict.yaml"), "-o", P("q.onnx"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("compiling the recipe's parts again", stderr);
        Assert.Contains("the error is the weights' alone (recipe strict keeps activations and cache in float)", stderr);
    }

    [Fact]
    public void TheBundledCompileMeetsItsRecipesExpectation()
    {
        var (code, stdout, stderr) = Run("compile", "-o", P("q.onnx"));
        Assert.True(code == 0, stderr + stdout);
        Assert.DoesNotContain("far above", stderr);
        Assert.DoesNotContain("far below", stderr);
    }

    /// <summary>prefix_tokens' prefix starts with BOS: compile reads text without its own BOS (the float model would otherwise read
    /// two), says so, and the report's data line shows it; --no-bos says nothing more.</summary>
    [Fact]
    public void APrefixRecipeReadsTextWithoutItsOwnBos()
    {
        File.WriteAllText(P("prefix.yaml"), """
            name: prefix-w8
            passes:
              - prefix_tokens
              - quantize: { weights: int8, activations: int8, mode: dynamic }
              - weights: { method: rtn }
              - lower_qdq
            """);
        var (code, stdout, stderr) = Run("compile", Cli.DefaultModelPath(), "--recipe", P("prefix.yaml"), "-o", P("q.onnx"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("quantc: note: the recipe's prefix_tokens puts BOS first in the KV-cache prefix: text is read without its own BOS",
            stderr);
        Assert.Contains("without BOS", stdout);
        Assert.DoesNotContain("BOS first in each sample", stdout);
        (code, stdout, stderr) = Run("compile", Cli.DefaultModelPath(), "--recipe", P("prefix.yaml"), "-o", P("q2.onnx"), "--no-bos");
        Assert.True(code == 0, stderr + stdout);
        Assert.DoesNotContain("puts BOS first", stderr);

        // verify reads the compiled model's prefix from its metadata and does the same: the same figures as with --no-bos.
        (code, stdout, stderr) = Run("verify", Cli.DefaultModelPath(), P("q.onnx"), "--no-layers", "--samples", "4", "--json");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("carries a KV-cache prefix that starts with BOS (prefix_tokens): text is read without its own BOS", stderr);
        var (code2, explicitNoBos, stderr2) = Run("verify", Cli.DefaultModelPath(), P("q.onnx"), "--no-layers", "--samples", "4", "--json",
            "--no-bos");
        Assert.True(code2 == 0, stderr2 + explicitNoBos);
        Assert.DoesNotContain("carries a KV-cache prefix", stderr2);
        Assert.Equal(explicitNoBos, stdout);
        Assert.Contains("without BOS", stdout);
    }
}
