using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Cli.Tests;

/// <summary>
/// Bad inputs through the CLI (issue 22): data the model cannot take, broken models, unusable thresholds. Each is
/// refused before anything runs: exit 2, one "quantc: error:" line on stderr, nothing written, the inputs unchanged.
/// </summary>
public sealed class BadInputTests() : FolderTest("quantc-bad")
{
    /// <summary>The bundled byte-tokenized tiny llama (vocabulary 257, 1024 positions) copied into the test folder.</summary>
    private string Llama()
    {
        File.Copy(Cli.DefaultModelPath(), P("m.onnx"), overwrite: true);
        return P("m.onnx");
    }

    private string Ids(string name, params long[] ids)
    {
        File.WriteAllText(P(name), "[" + string.Join(",", ids) + "]\n");
        return P(name);
    }

    private static readonly string[] Fast = ["--recipe", "w8a8", "--samples", "1", "--seq-len", "16"];

    [Fact]
    public void TokenIdsOutsideTheVocabularyAreRefusedEverywhere()
    {
        string m = Llama();
        string neg = Ids("neg.jsonl", 256, 72, -5, 10), oov = Ids("oov.jsonl", 256, 72, 257), huge = Ids("huge.jsonl", 256, long.MaxValue);
        foreach (var (data, what) in new[] { (neg, "is negative"), (oov, "vocabulary of 257"), (huge, "vocabulary of 257") })
        {
            Assert.Contains(what, Refused("verify", m, m, "--data", data, "--samples", "1"));
            Assert.Contains(what, Refused(["compile", m, "-o", P("q.onnx"), "--calib", data, .. Fast]));
            Assert.Contains(what, Refused(["compile", m, "-o", P("q.onnx"), "--data", data, .. Fast]));
            Assert.Contains(what, Refused("calibrate", m, "--calib", data, "-o", P("s.json")));
        }
        var npy = P("neg.npy");
        Quantc.Core.Data.Npy.Write(npy, new long[] { 256, -1, 3 }, [1, 3]);
        Assert.Contains("token id -1 (sample 1, position 2) is negative", Refused("verify", m, m, "--data", npy));
    }

    [Fact]
    public void SequencesLongerThanTheModelsPositionsAreRefused()
    {
        string m = Llama();
        Assert.Contains("longer than the model's 1024 positions", Refused("verify", m, m, "--seq-len", "1025", "--samples", "1"));
        Assert.Contains("longer than the model's 1024 positions", Refused("compile", m, "-o", P("q.onnx"), "--recipe", "w8a8", "--samples", "1", "--seq-len", "2000"));
        // A fixed sequence dimension: the data must have exactly that many tokens.
        using (var fixedLen = Model.Load(m))
        {
            fixedLen.Graph.Find("input_ids")!.Type!.TensorType.Shape.Dim[1].DimValue = 16;
            fixedLen.Save(P("fixed.onnx"));
        }
        Assert.Contains("takes exactly 16 tokens, not 32", Refused("verify", P("fixed.onnx"), P("fixed.onnx"), "--seq-len", "32", "--samples", "1"));
    }

    [Fact]
    public void AnExternalDataLocationThatIsAFolderIsSaidToBeOne()
    {
        using (var m = Model.Load(Cli.DefaultModelPath()))
            m.Save(P("x.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024, ExternalDataFileName = "x.data" });
        File.Delete(P("x.data"));
        Directory.CreateDirectory(P("x.data"));
        Assert.Contains("'x.data' is a folder, not a file", Refused("inspect", P("x.onnx")));
    }
}
