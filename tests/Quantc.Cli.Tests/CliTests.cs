using System.Text.Json;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Cli.Tests;

public sealed class CliTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-cli");

    public void Dispose() => _dir.Delete(recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private string SmallModel(float weightScale = 0, string name = "small")
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = Shape(2, 4) } });
        var w = g.AddInitializer(Tensor.FromFloats("fc.weight", [4, 3], Enumerable.Range(0, 12).Select(i => (i % 5 - 2) * (1 + weightScale)).ToArray()));
        var b = g.AddInitializer(Tensor.FromFloats("fc.bias", [3], new float[3]));
        var mm = g.AddNode("MatMul", [x, w]);
        var add = g.AddNode("Add", [mm.Output, b]);
        var relu = g.AddNode("Relu", [add.Output], outputNames: ["y"]);
        g.AddOutput(relu.Output);
        var path = Path.Combine(_dir.FullName, name + ".onnx");
        m.Save(path);
        return path;
    }

    private static TensorShapeProto Shape(params long[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims) s.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return s;
    }

    [Fact]
    public void InspectPrintsStableJson()
    {
        var path = SmallModel();
        var (code, stdout, stderr) = Run("inspect", path, "--json");
        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal(10, root.GetProperty("ir_version").GetInt64());
        Assert.Equal("x", root.GetProperty("inputs")[0].GetProperty("name").GetString());
        Assert.Equal(4, root.GetProperty("inputs")[0].GetProperty("shape")[1].GetInt64());
        Assert.Equal(1, root.GetProperty("op_histogram").GetProperty("MatMul").GetInt32());
        Assert.Equal(15, root.GetProperty("parameters").GetProperty("total_elements").GetInt64());
        Assert.Equal(60, root.GetProperty("parameters").GetProperty("total_bytes").GetInt64());
        Assert.Equal(stdout, Run("inspect", path, "--json").Out);
    }

    [Fact]
    public void InspectPrintsTables()
    {
        var (code, stdout, _) = Run("inspect", SmallModel());
        Assert.Equal(0, code);
        Assert.Contains("MatMul", stdout);
        Assert.Contains("float32", stdout);
    }

    [Theory]
    [InlineData("missing")]
    [InlineData("empty")]
    [InlineData("text")]
    [InlineData("folder")]
    [InlineData("truncated")]
    public void BadInputGivesExitTwoAndOneLine(string kind)
    {
        string path = Path.Combine(_dir.FullName, kind + ".onnx");
        switch (kind)
        {
            case "empty": File.WriteAllBytes(path, []); break;
            case "text": File.WriteAllText(path, "this is not a model\n"); break;
            case "folder": Directory.CreateDirectory(path); break;
            case "truncated":
                var bytes = File.ReadAllBytes(SmallModel());
                File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
                break;
        }
        var (code, stdout, stderr) = Run("inspect", path);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("quantc: error: ", stderr);
    }

    [Fact]
    public void EveryTruncationIsABadInputNeverACrash()
    {
        var bytes = File.ReadAllBytes(SmallModel());
        string path = Path.Combine(_dir.FullName, "cut.onnx");
        for (int n = 0; n < bytes.Length; n += Math.Max(1, bytes.Length / 97))
        {
            File.WriteAllBytes(path, bytes[..n]);
            var (code, _, stderr) = Run("inspect", path, "--json");
            Assert.True(code is 0 or 2, $"cut at {n}: exit {code}: {stderr}");
        }
    }

    [Theory]
    [InlineData("bogus")]
    [InlineData("inspect", "--no-such-flag", "x.onnx")]
    public void UsageErrorsGiveExitTwo(params string[] args)
    {
        var (code, _, stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.StartsWith("quantc: error: ", stderr);
    }

    /// <summary>The small model with the MatMul reading the Relu's output: a cycle, edited in the protobuf since the IR refuses to build one.</summary>
    private string CyclicModel()
    {
        var p = ModelProto.Parser.ParseFrom(File.ReadAllBytes(SmallModel(name: "acyclic")));
        p.Graph.Node[0].Input[0] = "y";
        var path = Path.Combine(_dir.FullName, "cyclic.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(p));
        return path;
    }

    [Theory]
    [InlineData("inspect")]
    [InlineData("compile")]
    [InlineData("verify")]
    [InlineData("verify-as-compiled")]
    [InlineData("diff")]
    [InlineData("diff-as-b")]
    public void ACyclicGraphIsExitTwoNamingTheCycle(string command)
    {
        var cyclic = CyclicModel();
        var small = SmallModel();
        var output = Path.Combine(_dir.FullName, "out.onnx");
        string[] args = command switch
        {
            "inspect" => ["inspect", cyclic],
            "compile" => ["compile", cyclic, "--recipe", "w8a8", "-o", output],
            "verify" => ["verify", cyclic, small, "--data", Npz()],
            "verify-as-compiled" => ["verify", small, cyclic, "--data", Npz()],
            "diff" => ["diff", cyclic, small],
            _ => ["diff", small, cyclic],
        };
        var (code, stdout, stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.Equal($"quantc: error: {cyclic}: graph 'main' has a cycle: MatMul → Add → Relu → MatMul\n", stderr.ReplaceLineEndings("\n"));
        Assert.False(File.Exists(output));
    }

    private string Npz()
    {
        var npy = Path.Combine(_dir.FullName, "x.npy");
        Quantc.Core.Data.Npy.Write(npy, new float[] { 1, -2, 3, 0.5f, 2, 1, -1, 4 }, [2, 4]);
        var npz = Path.Combine(_dir.FullName, "x.npz");
        using var zip = System.IO.Compression.ZipFile.Open(npz, System.IO.Compression.ZipArchiveMode.Create);
        System.IO.Compression.ZipFileExtensions.CreateEntryFromFile(zip, npy, "x.npy");
        return npz;
    }

    [Fact]
    public void VerifyPassesAgainstItselfAndGatesOnThresholds()
    {
        var a = SmallModel();
        var data = Npz();
        var (code, stdout, _) = Run("verify", a, a, "--data", data, "--json", "--min-sqnr", "40");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal("inf", doc.RootElement.GetProperty("outputs")[0].GetProperty("sqnr_db").GetString());
            Assert.True(doc.RootElement.GetProperty("passed").GetBoolean());
        }
        var b = SmallModel(weightScale: 0.05f, name: "perturbed");
        (code, stdout, _) = Run("verify", a, b, "--data", data, "--min-sqnr", "40");
        Assert.Equal(1, code);
        Assert.Contains("FAILED", stdout);
        (code, _, _) = Run("verify", a, b, "--data", data, "--min-sqnr", "10");
        Assert.Equal(0, code);
    }

    [Fact]
    public void DiffReportsNothingForTheSameModelAndTheChangedWeightOtherwise()
    {
        var a = SmallModel();
        var (code, stdout, _) = Run("diff", a, a);
        Assert.Equal(0, code);
        Assert.Contains("no differences", stdout);
        var b = SmallModel(weightScale: 0.05f, name: "perturbed");
        (code, stdout, _) = Run("diff", a, b, "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(stdout);
        var init = doc.RootElement.GetProperty("initializers")[0];
        Assert.Equal("fc.weight", init.GetProperty("b").GetString());
        Assert.Equal("values changed", init.GetProperty("detail").GetString());
    }

    /// <summary>A small saved model (for other test classes).</summary>
    internal string SmallModelFor(float weightScale, string name) => SmallModel(weightScale, name);

    /// <summary>An .npz with input x (for other test classes).</summary>
    internal string NpzFor() => Npz();

    [Fact]
    public void CalibrateWritesReusableStatistics()
    {
        var model = SmallModel(0.1f, "calib");
        var stats = Path.Combine(_dir.FullName, "stats.json");
        var (code, stdout, stderr) = Run("calibrate", model, "--calib", Npz(), "-o", stats);
        Assert.True(code == 0, stderr);
        Assert.Contains("1 tensors", stdout);
        var back = Assert.Single(Quantc.Core.Calibration.StatsFile.Load(stats));
        Assert.Equal("x", back.Name);
        Assert.Equal(4, back.Channels);
        Assert.Equal(4f, back.Max);
        (code, _, stderr) = Run("calibrate", model, "-o", stats);
        Assert.Equal(2, code);
        Assert.Contains("--calib", stderr);
    }

    [Fact]
    public void ModelsBuildsTheBundledTinyLlamaByteForByte()
    {
        var path = Path.Combine(_dir.FullName, "llama.onnx");
        var (code, stdout, stderr) = Run("models", "llama", "--size", "tiny", "-o", path);
        Assert.True(code == 0, stderr);
        Assert.Contains("llama (tiny, seed 0, torch)", stdout);
        Assert.Equal(File.ReadAllBytes(Cli.DefaultModelPath()), File.ReadAllBytes(path));
        var fused = Path.Combine(_dir.FullName, "opt-fused.onnx");
        (code, stdout, stderr) = Run("models", "opt", "--flavor", "fused", "-o", fused);
        Assert.True(code == 0, stderr);
        Assert.Contains("opt (tiny, seed 0, fused)", stdout);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(Cli.DefaultModelPath())!, "tiny-opt-fused.onnx")), File.ReadAllBytes(fused));
        Assert.Equal(2, Run("models", "mamba", "--flavor", "fused", "-o", path).Code);
        Assert.Equal(2, Run("models", "gpt2", "-o", path).Code);
        Assert.Equal(2, Run("models", "llama", "--size", "huge", "-o", path).Code);
        Assert.Equal(2, Run("models", "llama", "--config", "c.json", "-o", path).Code);
    }

    [Fact]
    public void CompileQuantizesTheBundledModelAndVerifiesIt()
    {
        var outPath = Path.Combine(_dir.FullName, "q.onnx");
        var (code, stdout, stderr) = Run("compile", "--recipe", "smoothquant", "-o", outPath, "--samples", "4");
        Assert.True(code == 0, stderr);
        Assert.Contains("verify on 8 held-out samples (", stdout);
        // One line times every stage, with the passes' calibration runs, the read and write rates and the peak resident set.
        var stages = Assert.Single(stdout.Split('\n'), l => l.StartsWith("  stages: ", StringComparison.Ordinal));
        const string T = "[0-9.]+ s( cpu [0-9.]+ s)?";
        Assert.Matches($@"^  stages: open {T}, weights scan {T} \([0-9]+ MB, [0-9]+ MB/s\), data [0-9.]+ s, import {T}, " +
            $@"passes {T} \(calibration [0-9.]+ s, housekeeping [0-9.]+ s\), write {T} \([0-9]+ MB, [0-9]+ MB/s\), " +
            $@"ORT load check {T}, verify {T}, attribution {T}, report [0-9.]+ s; peak RSS [1-9][0-9]* MiB$", stages.TrimEnd('\r'));
        Assert.Matches(@"\n  smooth +FunctionPreserving +[0-9]+ ms \(cpu [0-9]+ ms\)  nodes [0-9]+ → [0-9]+  \(calibration [0-9]+ ms\)", stdout);
        Assert.True(File.Exists(outPath));
        using var report = JsonDocument.Parse(File.ReadAllText(Path.ChangeExtension(outPath, ".report.json")));
        Assert.Equal("smoothquant", report.RootElement.GetProperty("recipe").GetString());
        Assert.True(report.RootElement.GetProperty("layers").GetArrayLength() > 20);
        Assert.True(report.RootElement.GetProperty("verify").GetProperty("top1_agreement").GetDouble() > 0.5);
        Assert.Equal(2, Run("compile", "--recipe", "no-such-recipe", "-o", outPath).Code);
    }

    /// <summary>
    /// Issue 15 on screen: compile says which layers took another group size and which stay float (one line per reason,
    /// names folded by layer index), takes --verify-samples, and inspect of the result lists the quantized layers (16: q/k/v and gate/up packed by fuse_projections).
    /// </summary>
    [Fact]
    public void CompileSaysWhatStaysFloatAndInspectListsTheQuantizedLayers()
    {
        var outPath = Path.Combine(_dir.FullName, "w4.onnx");
        var (code, stdout, stderr) = Run("compile", "--recipe", "w4a16-rtn", "-o", outPath, "--samples", "2", "--verify-samples", "3");
        Assert.True(code == 0, stderr);
        Assert.Contains("  4 layers: quantize: group size 8 instead of 32: in_features 344 is not a multiple of 32: model.layers.[0-3].mlp.down_proj\n", stdout);
        Assert.Contains("  1 layer stays float (kept float: matches exclude pattern ^lm_head$): lm_head\n", stdout);
        Assert.Contains("verify on 3 held-out samples (", stdout);

        var (icode, inspect, _) = Run("inspect", outPath);
        Assert.Equal(0, icode);
        Assert.Contains("quantized linear layer (16)", inspect);
        Assert.Matches(@"model\.layers\.0\.mlp\.down_proj\s+MatMul\s+int4 blocks of 8\s+float", inspect);
        Assert.Contains("float linear layer (1)", inspect);
        using var json = JsonDocument.Parse(Run("inspect", outPath, "--json").Out);
        Assert.Equal(16, json.RootElement.GetProperty("quantized_layers").GetArrayLength());
    }

    /// <summary>Defect 8: verify --seq-len applies to token-id data.</summary>
    [Fact]
    public void VerifySeqLenCutsTokenIds()
    {
        string model = Cli.DefaultModelPath();
        var ids = Path.Combine(_dir.FullName, "ids.jsonl");
        File.WriteAllLines(ids, [$"[{string.Join(", ", Enumerable.Range(0, 40).Select(i => 65 + i % 26))}]"]);
        var (code, stdout, stderr) = Run("verify", model, model, "--data", ids, "--seq-len", "16", "--no-layers");
        Assert.True(code == 0, stderr);
        Assert.Contains("(3 samples: 1 sequence longer than 16 tokens cut into pieces of 16)", stdout);
    }

    /// <summary>
    /// verify --exact on a function-preserving rewrite (fold_norm + rotate_residual of the bundled tiny llama): both models
    /// are compared with the original evaluated in float64, so the float32 original's own error shows as the noise floor.
    /// A model with contrib ops (no float64 kernels) is refused with the reason, exit code 2.
    /// </summary>
    [Fact]
    public void VerifyExactReportsTheFloat32NoiseFloor()
    {
        string original = Cli.DefaultModelPath();
        var recipe = Path.Combine(_dir.FullName, "r1.yaml");
        File.WriteAllText(recipe, "passes: [fold_norm, rotate_residual]\n");
        var outPath = Path.Combine(_dir.FullName, "r1.onnx");
        var (code, _, stderr) = Run("compile", original, "--recipe", recipe, "-o", outPath, "--samples", "2", "--no-verify");
        Assert.True(code == 0, stderr);
        (code, var stdout, stderr) = Run("verify", original, outPath, "--exact", "--no-layers", "--json", "--samples", "2", "--seq-len", "64");
        Assert.True(code == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            var logits = doc.RootElement.GetProperty("outputs").EnumerateArray().Single(o => o.GetProperty("name").GetString() == "logits");
            double noise = logits.GetProperty("original_float32_noise_sqnr_db").GetDouble(), exact = logits.GetProperty("sqnr_vs_exact_db").GetDouble(),
                plain = logits.GetProperty("sqnr_db").GetDouble();
            Assert.InRange(noise, 80, 160);                  // float32 rounding: finite, far above any quantization error
            Assert.InRange(exact, 80, 160);
            Assert.InRange(plain, 80, 160);
        }
        var page = Path.Combine(_dir.FullName, "exact.html");
        (code, stdout, _) = Run("verify", original, outPath, "--exact", "--no-layers", "--samples", "1", "--seq-len", "16", "--html", page);
        Assert.Equal(0, code);
        Assert.Contains("fp32 noise dB", stdout);
        Assert.Contains("float32 noise dB", File.ReadAllText(page));
        string ortgenai = Path.Combine(Path.GetDirectoryName(original)!, "tiny-llama-ortgenai.onnx");
        (code, _, stderr) = Run("verify", ortgenai, ortgenai, "--exact", "--samples", "1", "--seq-len", "16");
        Assert.Equal(2, code);
        Assert.Contains("has no float64 kernel", stderr);
    }

    [Fact]
    public void RecipesListsEveryBuiltInRecipeAndPass()
    {
        var (code, stdout, _) = Run("recipes");
        Assert.Equal(0, code);
        foreach (var r in new[] { "w8a8:", "w8a8-dynamic:", "smoothquant:", "outliertune:", "spike-mixed:", "w4a16-rtn:", "w4a16-gptq:", "w6a6-outliertune:" })
            Assert.Contains(r, stdout);
        Assert.Contains("lower_qdq", stdout);
    }

    [Fact]
    public void CompileReusesSavedStatistics()
    {
        var stats = Path.Combine(_dir.FullName, "stats.json");
        Assert.Equal(0, Run("calibrate", Cli.DefaultModelPath(), "--calib", "random", "--samples", "2", "--seq-len", "16", "-o", stats).Code);
        // w8a8 asks for statistics before any rewrite: the saved ones answer, no calibration data needed.
        var outPath = Path.Combine(_dir.FullName, "w8.onnx");
        var (code, stdout, stderr) = Run("compile", "--recipe", "w8a8", "--stats", stats, "--calib", "random", "--samples", "1", "--seq-len", "8", "-o", outPath, "--no-verify");
        Assert.True(code == 0, stderr);
        Assert.Contains("saved statistics answered 1", stdout);
        Assert.Contains("random", stderr); // random calibration data is only used when asked for, with a warning...
        using var report = JsonDocument.Parse(File.ReadAllText(Path.ChangeExtension(outPath, ".report.json")));
        Assert.Contains("random", report.RootElement.GetProperty("warnings")[0].GetString()); // ...that the report keeps
    }
}
