namespace Quantc.Cli.Tests;

/// <summary>
/// <c>quantc compile MODEL --recipe w8a8 --calib random</c> as a new user runs it on a model nobody here exported: the
/// exporter-like graphs of Quantc.Models.ExportedGraphs (opset 9 / 11, Constant-node weights) and a few backend-test corpus
/// models (the fast subset of bench/corpus-w8a8.sh): the compile says what the import step did, quantizes the layers,
/// verifies on other random inputs without --data (and says so), and writes a model ONNX Runtime loads.
/// </summary>
public sealed class ExportedModelCliTests() : FolderTest("quantc-exported-cli")
{
    private const string Corpus = "/usr/share/libonnx-testdata/data";

    [Theory]
    [InlineData("cnn-bn", "4 of 4 linear layers quantized")]
    [InlineData("dw-separable", "6 of 6 linear layers quantized")]
    [InlineData("paddle-encoder", "12 of 12 linear layers quantized")]
    public void CompilesAnExportedGraphAndVerifiesOnRandomInputs(string name, string quantized)
    {
        string model = P(name + ".onnx");
        using (var m = Quantc.Models.ExportedGraphs.Build(name)) m.Save(model);
        var (code, o, e) = Run("compile", model, "--recipe", "w8a8", "--calib", "random", "-o", P("q.onnx"));
        Assert.True(code == 0, e);
        Assert.Contains(quantized, o, StringComparison.Ordinal);
        Assert.Contains("import: ", o, StringComparison.Ordinal);
        Assert.Contains("no --data: verifying on random inputs", e, StringComparison.Ordinal);
        Assert.Contains("verify on 8 held-out samples (8 random samples", o, StringComparison.Ordinal);
        Assert.True(File.Exists(P("q.onnx")));
    }

    [Fact]
    public void NoVerifyStillRefusesToWriteWhatOnnxRuntimeCannotLoadAndWritesWhatItCan()
    {
        string model = P("cnn.onnx");
        using (var m = Quantc.Models.ExportedGraphs.Build("cnn-bn")) m.Save(model);
        var (code, o, e) = Run("compile", model, "--recipe", "w8a8", "--calib", "random", "--no-verify", "-o", P("q.onnx"));
        Assert.True(code == 0, e);
        Assert.DoesNotContain("verify on", o, StringComparison.Ordinal);
        using var s = new Microsoft.ML.OnnxRuntime.InferenceSession(P("q.onnx"));
        Assert.Single(s.OutputNames);
    }

    /// <summary>Corpus models with a Conv, a depthwise Conv, a Gemm, a MatMul and a ConvTranspose: compiled and verified.</summary>
    [Theory]
    [InlineData("pytorch-converted/test_Conv2d_depthwise_padded")]
    [InlineData("pytorch-converted/test_Conv2d_groups")]
    [InlineData("pytorch-converted/test_Linear_no_bias")]
    [InlineData("node/test_matmul_3d")]
    [InlineData("node/test_gemm_default_single_elem_vector_bias")]
    [InlineData("pytorch-operator/test_operator_conv")]
    [InlineData("pytorch-converted/test_ConvTranspose2d")]
    public void CompilesCorpusModels(string name)
    {
        string model = Path.Combine(Corpus, name, "model.onnx");
        Assert.True(File.Exists(model), $"{model} is missing: install Debian's libonnx-testdata");
        var (code, o, e) = Run("compile", model, "--recipe", "w8a8", "--calib", "random", "-o", P("q.onnx"));
        Assert.True(code == 0, e);
        Assert.Contains("verify on ", o, StringComparison.Ordinal);
        using var s = new Microsoft.ML.OnnxRuntime.InferenceSession(P("q.onnx"));
    }

    /// <summary>
    /// A model whose opset cannot be raised to the one lower_qdq needs (a Scan of opset 8, whose semantics changed at 9,
    /// beside a MatMul layer): exit 2 with the one-line reason, nothing written.
    /// </summary>
    [Fact]
    public void RefusesAModelItCannotConvertWithTheReason()
    {
        string model = P("scan8.onnx");
        using (var m = Quantc.Ir.Model.Create(opset: 8, irVersion: 3))
        {
            var g = m.Graph;
            var x = g.AddInput("x", Quantc.Ir.Building.OnnxBuilder.TensorType(Quantc.Onnx.Proto.TensorProto.Types.DataType.Float, 2, 4));
            var w = g.AddInitializer(Quantc.Ir.Tensor.FromFloats("fc.weight", [4, 4], Enumerable.Range(0, 16).Select(i => i * 0.1f).ToArray()));
            var y = g.AddNode("MatMul", [x, w], name: "/fc/MatMul", outputNames: ["y"]).Output;
            var scan = g.AddNode("Scan", [null, y], name: "scan", outputNames: ["z"]);
            scan.SetAttribute("num_scan_inputs", 1L);
            var body = scan.SetSubgraph("body", "body");
            var bx = body.AddInput("bx", Quantc.Ir.Building.OnnxBuilder.TensorType(Quantc.Onnx.Proto.TensorProto.Types.DataType.Float));
            body.AddOutput(body.AddNode("Relu", [bx], name: "relu", outputNames: ["by"]).Output);
            g.AddOutput(scan.Output);
            y.Type = Quantc.Ir.Building.OnnxBuilder.TensorType(Quantc.Onnx.Proto.TensorProto.Types.DataType.Float, 2, 4);
            m.Save(model);
        }
        var before = Snapshot();
        var (code, _, e) = Run("compile", model, "--recipe", "w8a8", "--calib", "random", "-o", P("q.onnx"));
        Assert.Equal(2, code);
        Assert.True(e.Contains("cannot convert the model from opset 8 to 21", StringComparison.Ordinal), e);
        Assert.Contains("Scan-8", e, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot());
    }

    /// <summary>A corpus model ONNX Runtime cannot load (Gemm of opset 6 has no kernel) whose layers are graph inputs (nothing to
    /// quantize, so nothing raised its opset): refused as the input's fault (exit 2), not an internal error; nothing written.</summary>
    [Fact]
    public void AModelOnnxRuntimeCannotLoadIsRefusedNotAnInternalError()
    {
        string model = Path.Combine(Corpus, "pytorch-operator/test_operator_mm", "model.onnx");
        Assert.True(File.Exists(model), $"{model} is missing: install Debian's libonnx-testdata");
        var before = Snapshot();
        var (code, _, e) = Run("compile", model, "--recipe", "w8a8", "--calib", "random", "-o", P("q.onnx"));
        Assert.True(code == 2, e);
        Assert.Contains("quantc: error: ONNX Runtime cannot load the model", e, StringComparison.Ordinal);
        Assert.Equal(before, Snapshot());
    }
}
