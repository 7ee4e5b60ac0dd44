namespace Quantc.Cli.Tests;

/// <summary><c>quantc inspect</c> over ONNX's whole backend-test corpus: exit 0, or 2 with a reason; never a crash.</summary>
public class CorpusInspectTests
{
    private const string Corpus = "/usr/share/libonnx-testdata/data";

    [Fact]
    public void InspectHandlesEveryCorpusModel()
    {
        Assert.True(Directory.Exists(Corpus), $"{Corpus} is missing: install Debian's libonnx-testdata (./test does)");
        var models = Directory.GetFiles(Corpus, "model.onnx", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        Assert.True(models.Count >= 1000, $"expected the full corpus, found {models.Count} models");
        var failures = new List<string>();
        int ok = 0, refused = 0;
        foreach (var path in models)
        {
            foreach (var json in new[] { true, false })
            {
                var o = new StringWriter();
                var e = new StringWriter();
                int code = Cli.Run(json ? ["inspect", path, "--json"] : ["inspect", path], o, e);
                if (code == 0 && o.ToString().Length > 0) { if (json) ok++; }
                else if (code == 2 && e.ToString().StartsWith("quantc: error: ", StringComparison.Ordinal)) { if (json) refused++; }
                else failures.Add($"{path}: exit {code}: {e}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(10)));
        Assert.Equal(models.Count, ok + refused);
    }
}
