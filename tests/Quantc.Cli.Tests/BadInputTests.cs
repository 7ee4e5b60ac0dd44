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
        Assert.Contains("longer than the model's 1024 positions", Refused("verify", m, m, "--seq-len", "1025", "--samples", "1", "--no-doc-split"));
        Assert.Contains("longer than the model's 1024 positions", Refused("compile", m, "-o", P("q.onnx"), "--recipe", "w8a8", "--samples", "1", "--seq-len", "2000", "--no-doc-split"));
        // A fixed sequence dimension: the data must have exactly that many tokens.
        using (var fixedLen = Model.Load(m))
        {
            fixedLen.Graph.Find("input_ids")!.Type!.TensorType.Shape.Dim[1].DimValue = 16;
            fixedLen.Save(P("fixed.onnx"));
        }
        Assert.Contains("takes exactly 16 tokens, not 32", Refused("verify", P("fixed.onnx"), P("fixed.onnx"), "--seq-len", "32", "--samples", "1", "--no-doc-split"));
    }

    [Fact]
    public void TokenIdsGivenAsRawInputsAreCheckedToo()
    {
        // input_ids [batch, tokens] → Gather from a 10-row table: ids 0..9 only.
        using (var m = Model.Create())
        {
            var g = m.Graph;
            var shape = new TensorShapeProto();
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "tokens" });
            var ids = g.AddInput("input_ids", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 7, Shape = shape } });
            var table = g.AddInitializer(Tensor.FromFloats("embed.weight", [10, 4], new float[40]));
            g.AddOutput(g.AddNode("Gather", [table, ids], outputNames: ["h"]).Output);
            m.Save(P("emb.onnx"));
        }
        foreach (var (id, message) in new[] { (-1L, "token id -1 (sample 2, position 3) is negative"), (10L, "token id 10 (sample 2, position 3) is outside the model's vocabulary of 10 (rows of 'embed.weight')") })
        {
            string npz = Npz($"ids{id}.npz", "input_ids", new long[] { 1, 2, 3, 4, 5, id }, [2, 3]);
            Assert.Contains(message, Refused("verify", P("emb.onnx"), P("emb.onnx"), "--data", npz));
        }
    }

    [Fact]
    public void SequencesPastAPositionTableReachedOnlyAtRunTimeAreABadInputToo()
    {
        // OPT computes its positions from the attention mask (cumsum + 1): read from the graph, refused before anything runs.
        string tinyOpt = Path.Combine(Path.GetDirectoryName(Cli.DefaultModelPath())!, "tiny-opt.onnx");
        Assert.Contains("longer than the model's 1024 positions (rows of 'model.decoder.embed_positions.weight' less 2",
            Refused("verify", tinyOpt, tinyOpt, "--samples", "1", "--seq-len", "1100", "--no-layers", "--no-doc-split"));
        // With the offset computed at run time (Abs of the constant) the graph does not tell: ONNX Runtime finds the overflow, on
        // one line.
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(tinyOpt));
        var add = proto.Graph.Node.Single(n => n.OpType == "Add" && n.Name.Contains("embed_positions", StringComparison.Ordinal));
        proto.Graph.Node.Insert(proto.Graph.Node.IndexOf(add), new NodeProto { OpType = "Abs", Name = "offset_abs",
            Input = { add.Input[1] }, Output = { "offset_abs" } });
        add.Input[1] = "offset_abs";
        string opt = P("opt-runtime-offset.onnx");
        File.WriteAllBytes(opt, Google.Protobuf.MessageExtensions.ToByteArray(proto));
        Assert.Contains("ONNX Runtime cannot run the model on this data", Refused("compile", opt, "-o", P("q.onnx"), "--recipe", "w8a8", "--samples", "1", "--seq-len", "1100", "--no-doc-split"));
        Assert.Contains("ONNX Runtime cannot run the original model on this data", Refused("verify", opt, opt, "--samples", "1", "--seq-len", "1100", "--no-layers", "--no-doc-split"));
        // The rotary caches of contrib operators are read from the graph.
        string genai = Path.Combine(Path.GetDirectoryName(Cli.DefaultModelPath())!, "tiny-llama-ortgenai.onnx");
        Assert.Contains("longer than the model's 1024 positions", Refused("verify", genai, genai, "--samples", "1", "--seq-len", "1100", "--no-doc-split"));
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

    /// <summary>A copy of <paramref name="src"/> with element 0 of its last MatMul weight set to <paramref name="value"/>.</summary>
    private string WithWeight(string src, string name, float value)
    {
        using var m = Model.Load(src);
        var w = m.Graph.Nodes.Last(n => n.OpType == "MatMul" && n.Inputs[1] is { IsInitializer: true }).Inputs[1]!;
        var values = w.Initializer!.ToFloat32();
        values[0] = value;
        m.Graph.SetInitializer(w, Tensor.FromFloats(w.Name, w.Initializer.Dims, values));
        m.Save(P(name));
        return P(name);
    }

    [Fact]
    public void GatesFailOnNaNResultsAndNaNIsPrintedAsNaN()
    {
        string m = Llama(), nan = WithWeight(m, "nan.onnx", float.NaN);
        var (code, stdout, stderr) = Run("verify", m, nan, "--max-ppl-increase", "0.05", "--samples", "1", "--seq-len", "32", "--no-layers");
        Assert.True(code == 1, $"exit {code}: {stderr}{stdout}");
        Assert.Contains("FAILED: output 'logits': ", stdout);
        Assert.Contains("compiled values are NaN", stdout);
        Assert.Contains("FAILED: the compiled model's perplexity is NaN", stdout);
        Assert.Matches(@"logits\s+-inf\s+NaN", stdout);
        (code, stdout, _) = Run("verify", m, nan, "--min-sqnr", "10", "--samples", "1", "--seq-len", "32", "--no-layers", "--json");
        Assert.Equal(1, code);
        Assert.Contains("\"non_finite\": ", stdout);
        Assert.Contains("\"passed\": false", stdout);
        // Without a gate the run passes, but says what is not finite.
        (code, stdout, _) = Run("verify", m, nan, "--samples", "1", "--seq-len", "32", "--no-layers");
        Assert.Equal(0, code);
        Assert.Contains("NOT FINITE: output 'logits'", stdout);
    }

    [Theory]
    [InlineData("--min-sqnr", "NaN")]
    [InlineData("--min-sqnr", "-1")]
    [InlineData("--min-sqnr", "Infinity")]
    [InlineData("--max-ppl-increase", "NaN")]
    [InlineData("--max-ppl-increase", "-0.5")]
    [InlineData("--max-ppl-increase", "-Infinity")]
    public void ThresholdsThatCannotGateAreRefused(string option, string value)
    {
        string m = Llama();
        Assert.Contains($"{option} must be a finite number, 0 or more", Refused("verify", m, m, option, value, "--samples", "1", "--seq-len", "16"));
    }

    [Fact]
    public void APerplexityGateWithoutTokensIsRefused()
    {
        using var other = new CliTests();
        string m = other.SmallModelFor(0, "small");
        Assert.Contains("needs token data", Refused("verify", m, m, "--data", Npz("x.npz", [1, 2, 3, 4, 5, 6, 7, 8]), "--max-ppl-increase", "0.1"));
    }

    [Fact]
    public void NaNAndInfiniteWeightsAreRefusedByCompileWithTheirName()
    {
        string m = Llama(), nan = WithWeight(m, "nan.onnx", float.NaN), inf = WithWeight(m, "inf.onnx", float.NegativeInfinity);
        string weight;
        using (var model = Model.Load(m)) weight = model.Graph.Nodes.Last(n => n.OpType == "MatMul" && n.Inputs[1] is { IsInitializer: true }).Inputs[1]!.Name;
        Assert.Contains($"weight '{weight}' holds NaN or infinite values (element 0 of", Refused(["compile", nan, "-o", P("q.onnx"), .. Fast]));
        Assert.Contains($"weight '{weight}' holds NaN or infinite values", Refused(["compile", inf, "-o", P("q.onnx"), .. Fast]));
    }

    [Fact]
    public void CompileWarnsWhenItsVerificationIsNotFinite()
    {
        // A float input of NaN (the data, not the model): the compiled model's output is NaN and compile says so.
        using var other = new CliTests();
        string m = other.SmallModelFor(0.1f, "small");
        var clean = Npz("clean.npz", [1, -2, 3, 0.5f, 2, 1, -1, 4]);
        var nan = Npz("nan.npz", [1, float.NaN, 3, 0.5f, 2, 1, -1, 4]);
        var (code, stdout, stderr) = Run("compile", m, "-o", P("q.onnx"), "--recipe", "w8a8", "--calib", clean, "--data", nan);
        Assert.True(code == 0, stderr);
        Assert.Contains("quantc: warning: verify: output 'y': ", stderr);
        Assert.Contains("cosine NaN", stdout);
    }

    /// <summary>An .npz with the [2, 4] input x of the small model.</summary>
    private string Npz(string name, float[] x) => Npz(name, "x", x, [2, 4]);

    /// <summary>An .npz holding one array, for the model input <paramref name="input"/>.</summary>
    private string Npz(string name, string input, Array data, long[] shape)
    {
        var npy = P(name + ".npy");
        Quantc.Core.Data.Npy.Write(npy, data, shape);
        using (var zip = System.IO.Compression.ZipFile.Open(P(name), System.IO.Compression.ZipArchiveMode.Create))
            System.IO.Compression.ZipFileExtensions.CreateEntryFromFile(zip, npy, input + ".npy");
        File.Delete(npy);
        return P(name);
    }

    [Fact]
    public void ANegativeInputDimensionIsRefused()
    {
        using (var m = Model.Load(Cli.DefaultModelPath()))
        {
            m.Graph.Find("input_ids")!.Type!.TensorType.Shape.Dim[1].DimValue = -3;
            m.Save(P("neg.onnx"));
        }
        Assert.Contains("input 'input_ids' has a negative dimension (-3)", Refused("inspect", P("neg.onnx")));
        Assert.Contains("negative dimension", Refused(["compile", P("neg.onnx"), "-o", P("q.onnx"), .. Fast]));
        Assert.Contains("negative dimension", Refused("verify", P("neg.onnx"), P("neg.onnx"), "--samples", "1"));
    }

    [Fact]
    public void VerifyRefusesModelsWhoseInputsOrOutputsDifferInShape()
    {
        string m = Llama();
        using (var b = Model.Load(m))
        {
            var dims = b.Graph.Find("logits")!.Type!.TensorType.Shape.Dim;
            dims.Add(new TensorShapeProto.Types.Dimension { DimValue = 1 });
            b.Save(P("rank.onnx"));
        }
        Assert.Contains("output 'logits' is [?, ?, 257] in the original but [?, ?, 257, 1] in the compiled model", Refused("verify", m, P("rank.onnx"), "--samples", "1", "--seq-len", "16"));
        using (var b = Model.Load(m))
        {
            b.Graph.Find("past_key_values.0.key")!.Type!.TensorType.Shape.Dim[3].DimValue = 16;
            b.Save(P("shape.onnx"));
        }
        Assert.Contains("input 'past_key_values.0.key' is [?, 2, ?, 32] in the original but [?, 2, ?, 16]", Refused("verify", m, P("shape.onnx"), "--samples", "1", "--seq-len", "16"));

        // Undeclared shapes that differ when run: [2, 3] against the same values as [3, 2].
        using var other = new CliTests();
        string small = other.SmallModelFor(0, "small");
        using (var t = Model.Load(small))
        {
            var g = t.Graph;
            var y = g.Outputs[0];
            g.RenameValue(y, "y0");
            var shape = g.AddInitializer(Tensor.FromValues("to_3x2", 7, [2], new long[] { 3, 2 }));
            g.SetOutput(0, g.AddNode("Reshape", [y, shape], outputNames: ["y"]).Output);
            t.Save(P("transposed.onnx"));
        }
        Assert.Contains("output 'y' is [2, 3] in the original but [3, 2] in the compiled model",
            Refused("verify", small, P("transposed.onnx"), "--data", Npz("x.npz", [1, 2, 3, 4, 5, 6, 7, 8])));
    }

    /// <summary>A .npy of int64 token ids whose header claims <paramref name="shape"/>, followed by <paramref name="values"/>.</summary>
    private string NpyWithShape(string name, string shape, params long[] values)
    {
        string header = $"{{'descr': '<i8', 'fortran_order': False, 'shape': ({shape}), }}";
        header += new string(' ', (64 - (10 + header.Length + 1) % 64) % 64) + "\n";
        using var fs = File.Create(P(name));
        fs.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)header.Length, (byte)(header.Length >> 8)]);
        fs.Write(System.Text.Encoding.Latin1.GetBytes(header));
        fs.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return P(name);
    }

    [Theory]
    [InlineData("-3,", "not a list of non-negative integers")]
    [InlineData("'three',", "not a list of non-negative integers")]
    [InlineData("1.5, 2", "not a list of non-negative integers")]
    [InlineData("99999999999999999999999,", "not a list of non-negative integers")]
    [InlineData("4000000000, 4000000000", "needs more data than the file holds")]
    [InlineData("1, 100000", "needs more data than the file holds")]
    public void NpyShapesThatAreNotSizesAreRefused(string shape, string message)
    {
        string m = Llama(), npy = NpyWithShape("ids.npy", shape, 256, 72, 101);
        Assert.Contains(message, Refused("verify", m, m, "--data", npy));
        Assert.Contains(message, Refused(["compile", m, "-o", P("q.onnx"), "--calib", npy, .. Fast]));
    }

    private const string Esc = "\u001b[2J\u001b]0;owned\u0007";

    /// <summary>The small model with escape sequences in its producer, node, tensor, weight and dimension names (and a copy with other weights).</summary>
    private (string A, string B) EvilModels()
    {
        using var other = new CliTests();
        foreach (var (name, scale) in new[] { ("evil-a.onnx", 1f), ("evil-b.onnx", 1.1f) })
        {
            using var m = Model.Load(other.SmallModelFor(0, "small"));
            m.ProducerName = "maker" + Esc;
            var g = m.Graph;
            foreach (var n in g.Nodes) n.Name = n.OpType + Esc;
            g.RenameValue(g.Nodes[0].Output, "mm" + Esc);
            var w = g.Find("fc.weight")!;
            g.SetInitializer(w, Tensor.FromFloats(w.Name, w.Initializer!.Dims, w.Initializer.ToFloat32().Select(x => x * scale).ToArray()));
            g.RenameValue(w, "fc" + Esc);
            var dim = g.Find("x")!.Type!.TensorType.Shape.Dim[0];
            dim.DimParam = "batch" + Esc;
            m.Save(P(name));
        }
        return (P("evil-a.onnx"), P("evil-b.onnx"));
    }

    private static void Escaped(string stdout)
    {
        Assert.DoesNotContain('\u001b', stdout);
        Assert.DoesNotContain('\u0007', stdout);
        Assert.Contains("\\x1b[2J\\x1b]0;owned\\x07", stdout);
    }

    [Fact]
    public void NamesFromTheModelAreEscapedOnTheTerminalAndExactInJson()
    {
        var (a, b) = EvilModels();
        var (code, stdout, stderr) = Run("inspect", a);
        Assert.True(code == 0, stderr);
        Escaped(stdout);
        Assert.Contains("maker\\x1b[2J", stdout);
        Assert.Contains("batch\\x1b[2J", stdout);
        (code, stdout, _) = Run("inspect", a, "--json");
        Assert.Equal(0, code);
        using (var doc = System.Text.Json.JsonDocument.Parse(stdout))
            Assert.StartsWith("maker" + Esc, doc.RootElement.GetProperty("producer").GetString());
        (code, stdout, _) = Run("diff", a, b);
        Assert.Equal(0, code);
        Escaped(stdout);
        (code, stdout, _) = Run("diff", a, b, "--json");
        Assert.Equal(0, code);
        using (System.Text.Json.JsonDocument.Parse(stdout)) { }
        (code, stdout, stderr) = Run("verify", a, b, "--data", Npz("x.npz", [1, 2, 3, 4, 5, 6, 7, 8]));
        Assert.True(code == 0, stderr);
        Escaped(stdout);
    }
}
