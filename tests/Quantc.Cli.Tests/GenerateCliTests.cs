using System.Text.RegularExpressions;

namespace Quantc.Cli.Tests;

/// <summary><c>compile --genai</c> and <c>generate</c> end to end on the bundled tiny LLaMA.</summary>
public sealed class GenerateCliTests() : FolderTest("quantc-generate-")
{
    [Fact]
    public void CompilesAGenaiFolderGeneratesAndComparesWithTheFloatModel()
    {
        string recipe = P("float.yaml");
        File.WriteAllText(recipe, "name: float\ndescription: fusions only\npasses:\n  - fuse_norm\n  - fuse_rope\n  - fuse_attention\n");
        var (code, stdout, stderr) = Run("compile", "--genai", "-o", P("float"), "--recipe", recipe, "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        (code, stdout, stderr) = Run("compile", "--genai", "-o", P("q"), "--recipe", "w8a8-dynamic", "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("GenAI folder", stdout);
        foreach (var f in new[] { "model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json" })
            Assert.True(File.Exists(Path.Combine(P("q"), f)), f);
        // A second compile into the same folder replaces quantc's own files without --force.
        (code, _, stderr) = Run("compile", "--genai", "-o", P("q"), "--recipe", "w8a8-dynamic", "--no-verify");
        Assert.True(code == 0, stderr);

        (code, stdout, stderr) = Run("generate", P("q"), "--prompt", "Once upon a time", "--max-tokens", "16", "--compare", P("float"));
        Assert.True(code == 0, stderr + stdout);
        Assert.StartsWith("Once upon a time", stdout);
        Assert.Matches(new Regex(@"\[q\] prefill 17 tokens in [\d.]+ ms \(\d+ tokens/s\); decode \d+ tokens"), stdout);
        Assert.Matches(new Regex(@"greedy outputs (identical: all \d+|agree on the first \d+ of \d+)"), stdout);
    }

    [Fact]
    public void RefusesWhatGenaiCannotRun()
    {
        string mamba = Path.Combine(Path.GetDirectoryName(Cli.DefaultModelPath())!, "tiny-mamba.onnx");
        Assert.Contains("KV cache", Refused("compile", mamba, "--genai", "-o", P("m"), "--recipe", "mamba-w8a8", "--no-verify"));
        Assert.Contains("genai_config.json", Refused("generate", Dir.FullName, "--prompt", "x"));
        Assert.Contains("--compare compares greedy outputs",
            Refused("generate", Dir.FullName, "--prompt", "x", "--temperature", "0.7", "--compare", Dir.FullName));
        Assert.Contains("--top-p", Refused("generate", Dir.FullName, "--prompt", "x", "--top-p", "1.5"));
    }
}
