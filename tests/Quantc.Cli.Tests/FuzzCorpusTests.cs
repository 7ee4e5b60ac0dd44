using Quantc.Fuzz;

namespace Quantc.Cli.Tests;

/// <summary>
/// The fuzz corpus and every finding kept as a regression input (fuzz/corpus, fuzz/regressions) go through the fuzz
/// targets in process: each is accepted or refused as bad input, never anything else. fuzz/run.sh does the fuzzing.
/// </summary>
public class FuzzCorpusTests
{
    public static TheoryData<string> TargetNames => [.. Targets.Names];

    [Theory]
    [MemberData(nameof(TargetNames))]
    public void EverySeedAndRegressionInputIsAcceptedOrRefusedCleanly(string target)
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Compiler.sln"))) root = Path.GetDirectoryName(root)!;
        var files = new[] { "corpus", "regressions" }
            .Select(d => Path.Combine(root, "fuzz", d, target))
            .Where(Directory.Exists)
            .SelectMany(Directory.EnumerateFiles)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);
        int accepted = 0;
        foreach (var f in files)
        {
            var e = Record.Exception(() => { if (Targets.Run(target, File.ReadAllBytes(f))) accepted++; });
            Assert.True(e is null, $"{Path.GetRelativePath(root, f)}: {e?.GetType().Name}: {e?.Message}");
        }
        Assert.True(accepted > 0, $"no {target} seed is a valid input (the corpus should start from inputs quantc accepts)");
    }
}
