using System.Text;

namespace Quantc.Models.Tests;

/// <summary>
/// The files committed under models/ are exactly what the builders produce, so the two cannot
/// drift. Regenerate them with <c>QUANTC_REGENERATE=1 dotnet test tests/Quantc.Models.Tests --filter CommittedFiles</c>.
/// </summary>
public class CommittedFilesTests
{
    /// <summary>Committed reference models: file name → (arch, size, seed, flavor).</summary>
    public static TheoryData<string, string, string, int, string> Models => new()
    {
        { "tiny-llama.onnx", "llama", "tiny", ReferenceModels.DefaultSeed, "torch" },
        { "tiny-llama-ortgenai.onnx", "llama", "tiny", ReferenceModels.DefaultSeed, "ortgenai" },
        { "tiny-opt.onnx", "opt", "tiny", ReferenceModels.DefaultSeed, "torch" },
        { "tiny-opt-fused.onnx", "opt", "tiny", ReferenceModels.DefaultSeed, "fused" },
        { "tiny-mamba.onnx", "mamba", "tiny", ReferenceModels.DefaultSeed, "torch" },
    };

    private static bool Regenerate => Environment.GetEnvironmentVariable("QUANTC_REGENERATE") == "1";

    [Theory]
    [MemberData(nameof(Models))]
    public void CommittedModelIsByteIdenticalToAFreshBuild(string file, string arch, string size, int seed, string flavor)
    {
        string committed = Repo.Path($"models/{file}");
        if (Regenerate) ReferenceModels.BuildAndSave(arch, size, seed, flavor, committed);
        var dir = Directory.CreateTempSubdirectory("quantc-committed-");
        try
        {
            var fresh = ReferenceModels.BuildAndSave(arch, size, seed, flavor, Path.Combine(dir.FullName, file));
            Assert.Null(fresh.ExternalDataPath);
            Assert.True(File.Exists(committed), $"{committed} is missing; regenerate with QUANTC_REGENERATE=1");
            Assert.True(File.ReadAllBytes(fresh.ModelPath).AsSpan().SequenceEqual(File.ReadAllBytes(committed)),
                $"models/{file} differs from a fresh build of {arch} {size} seed {seed} {flavor}; regenerate with QUANTC_REGENERATE=1 and commit");
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void CommittedTextIsTheGeneratedCorpus()
    {
        var (calib, eval) = (TextCorpus.Calibration(), TextCorpus.Evaluation());
        if (Regenerate)
        {
            File.WriteAllText(Repo.Path("models/calib.txt"), calib, new UTF8Encoding(false));
            File.WriteAllText(Repo.Path("models/eval.txt"), eval, new UTF8Encoding(false));
        }
        Assert.Equal(calib, File.ReadAllText(Repo.Path("models/calib.txt")));
        Assert.Equal(eval, File.ReadAllText(Repo.Path("models/eval.txt")));
        Assert.InRange(calib.Length + eval.Length, 180_000, 240_000);
        // Held out: no section of the evaluation text appears in the calibration text.
        var sections = calib.Split("\n\n").Where(p => p.Length > 200).ToHashSet();
        Assert.DoesNotContain(eval.Split("\n\n").Where(p => p.Length > 200), sections.Contains);
    }

    [Theory]
    [InlineData("tiny-llama.onnx")]
    [InlineData("tiny-llama-ortgenai.onnx")]
    [InlineData("tiny-opt.onnx")]
    [InlineData("tiny-opt-fused.onnx")]
    [InlineData("tiny-mamba.onnx")]
    public void CommittedModelLoadsAndRuns(string file)
    {
        using var m = Quantc.Ir.Model.Load(Repo.Path($"models/{file}"));
        using var d = new Decoder(m);
        var ids = LlamaTests.Tokens(File.ReadAllText(Repo.Path("models/eval.txt"))[..200]);
        var logits = d.Run(ids, only: ["logits"])["logits"];
        Assert.All(logits.Data, x => Assert.True(float.IsFinite(x)));
    }
}
