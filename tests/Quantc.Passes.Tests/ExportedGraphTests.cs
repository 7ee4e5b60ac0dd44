using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Import;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// Graphs laid out as older exporters write them (<see cref="ExportedGraphs"/>: opset 9 / 11, every weight in a Constant
/// node, BatchNormalization after Conv, depthwise Conv, a Paddle2ONNX-style encoder with a weight shared by two layers):
/// import normalization preserves the function and makes every layer visible to the map; w8a8 on random calibration
/// quantizes every Conv and MatMul, writes a model ONNX Runtime loads, verifies it on other random inputs, and ONNX
/// Runtime's optimized graph runs the layers on integer kernels (QLinearConv, MatMulIntegerToFloat).
/// </summary>
public sealed class ExportedGraphTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-exported");

    public void Dispose() => _dir.Delete(recursive: true);

    public static TheoryData<string> Graphs() => new(ExportedGraphs.Names);

    private static (int Convs, int MatMuls, int Gemms) LayerCounts(string name) => name switch
    {
        "cnn-bn" => (3, 0, 1),
        "paddle-encoder" => (0, 12, 0),
        _ => (5, 1, 0),
    };

    private string Save(Model m, string tag)
    {
        var path = Path.Combine(_dir.FullName, $"{tag}-{Guid.NewGuid():N}.onnx");
        m.Save(path);
        return path;
    }

    private static float[] Run(string path, CalibrationSample sample)
    {
        using var s = new InferenceSession(path);
        var inputs = CalibrationInputs.ToOrt(sample);
        using var ro = new RunOptions();
        using var outs = s.Run(ro, inputs.Select(i => i.Name).ToList(), inputs.Select(i => i.Value).ToList(), s.OutputNames);
        var result = outs[0].GetTensorDataAsSpan<float>().ToArray();
        foreach (var (_, v) in inputs) v.Dispose();
        return result;
    }

    [Theory]
    [MemberData(nameof(Graphs))]
    public void ImportNormalizationFindsEveryLayerAndPreservesTheFunction(string name)
    {
        using var m = ExportedGraphs.Build(name);
        string original = Save(m, "orig");
        Assert.Empty(LayerAnalysis.Analyze(m.Graph).Linears);   // every weight is a Constant node's output
        var summary = ImportNormalizer.Run(m);
        log.WriteLine(summary.Describe());
        var (convs, matmuls, gemms) = LayerCounts(name);
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(convs, map.Linears.Count(l => l.Node.Is("Conv")));
        Assert.Equal(matmuls, map.Linears.Count(l => l.Node.Is("MatMul")));
        Assert.Equal(gemms, map.Linears.Count(l => l.Node.Is("Gemm")));
        Assert.DoesNotContain(m.Graph.Nodes, n => n.Is("Constant") || n.Is("BatchNormalization"));
        Assert.Equal(name == "cnn-bn" ? 3 : name == "dw-separable" ? 5 : 0, summary.BatchNormsFolded);
        Assert.Equal(name == "paddle-encoder" ? 1 : 0, summary.SharedWeights);
        Assert.Equal(name == "cnn-bn" ? 1 : 0, summary.IdentitiesFolded);
        var sample = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 1, Seed = 11 }).Samples[0];
        var before = Run(original, sample);
        var after = Run(Save(m, "norm"), sample);
        double err = before.Zip(after, (a, b) => Math.Abs(a - b)).Max(), scale = before.Max(Math.Abs);
        log.WriteLine($"{name}: max |Δ| {err:G3} over max |y| {scale:G3}");
        Assert.True(err <= 1e-5 * Math.Max(1, scale), $"normalization changed the outputs by {err:G3}");
    }

    [Theory]
    [MemberData(nameof(Graphs))]
    public void W8a8OnRandomCalibrationQuantizesEveryConvAndMatMul(string name)
    {
        using var m = ExportedGraphs.Build(name);
        string original = Save(m, "orig");
        var calib = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 8 });
        var held = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 4, Seed = 99 });
        string output = Path.Combine(_dir.FullName, $"{name}.w8a8.onnx");
        using var result = TestCompiler.Compiler.Compile(m, TestCompiler.RecipeOf("w8a8"), new CompileOptions
        {
            Calibration = calib, HeldOut = held, OutputPath = output, OriginalPath = original,
        });
        foreach (var line in result.Context.Log) log.WriteLine(line);
        var (convs, matmuls, gemms) = LayerCounts(name);
        var layers = result.Context.Plan.Layers.ToList();
        Assert.Equal(convs + matmuls + gemms, layers.Count);
        Assert.All(layers, p => Assert.True(p.WeightFormat.IsInt8Storage && p.ActivationFormat == NumberFormat.UInt8,
            $"{p.Name}: {p.WeightFormat} / {p.ActivationFormat}: {string.Join("; ", p.Reasons)}"));
        double sqnr = result.Verify!.Outputs[0].SqnrDb;
        log.WriteLine($"{name}: w8a8 output SQNR {sqnr:0.0} dB on random inputs");
        Assert.True(sqnr > 20, $"SQNR {sqnr:0.0} dB");
        Assert.Contains(result.Context.Notices, n => n.StartsWith("import: ", StringComparison.Ordinal));

        // ONNX Runtime's optimized graph: each Conv as QLinearConv; MatMul and Gemm layers on the integer MatMulIntegerToFloat or
        // QGemm (a MatMul + bias Add becomes a Gemm first); no float Conv or Gemm left, and no float MatMul reads a dequantized weight.
        string optimized = Path.Combine(_dir.FullName, $"{name}.opt.onnx");
        using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized })
        using (new InferenceSession(output, so)) { }
        using var opt = Model.Load(optimized);
        var ops = opt.Graph.Nodes.GroupBy(n => n.OpType).ToDictionary(x => x.Key, x => x.Count());
        log.WriteLine(string.Join(", ", ops.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.Equal(convs, ops.GetValueOrDefault("QLinearConv"));
        Assert.Equal(0, ops.GetValueOrDefault("Conv") + ops.GetValueOrDefault("Gemm"));
        if (matmuls + gemms > 0) Assert.True(ops.GetValueOrDefault("MatMulIntegerToFloat") + ops.GetValueOrDefault("QGemm") > 0);
        Assert.DoesNotContain(opt.Graph.Nodes, n => n.OpType is "MatMul" or "FusedMatMul" && n.Inputs.Any(i =>
            i?.Producer is { } p && p.Is("DequantizeLinear") && p.Inputs[0] is { IsInitializer: true }));
    }

    /// <summary>The fusion passes on each exported graph (the encoder's decomposed LayerNorms and q/k/v projections fuse) keep its
    /// outputs.</summary>
    [Theory]
    [MemberData(nameof(Graphs))]
    public void FusionsKeepTheOutputs(string name)
    {
        using var m = ExportedGraphs.Build(name);
        string original = Save(m, "orig");
        var ctx = TestCompiler.Compile(m, "passes: [fuse_norm, fuse_rope, fuse_attention, fuse_projections]").Context;
        foreach (var line in ctx.Log) log.WriteLine(line);
        string fused = Save(m, "fused");
        foreach (int seed in new[] { 1, 2 })
        {
            var sample = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 1, Seed = seed }).Samples[0];
            var before = Run(original, sample);
            var after = Run(fused, sample);
            double err = before.Zip(after, (a, b) => Math.Abs(a - b)).Max(), scale = before.Max(Math.Abs);
            log.WriteLine($"{name}, seed {seed}: max |Δ| {err:G3} over max |y| {scale:G3}");
            Assert.True(err <= 1e-4 * Math.Max(1, scale), $"the fusions changed the outputs by {err:G3}");
        }
    }

    [Fact]
    public void FusionsLeaveAVisionGraphAloneAndSaySo()
    {
        using var m = ExportedGraphs.Build("dw-separable");
        var calib = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 4 });
        var ctx = TestCompiler.Compile(m, "w8a8", calib.Samples).Context;
        Assert.Contains(ctx.Log, l => l == "fuse_attention: no decomposed attention found");
        Assert.Contains(ctx.Log, l => l == "fuse_rope: no decomposed rotary embedding found");
        Assert.Contains(ctx.Log, l => l == "fuse_norm: no decomposed norm to fuse");
        Assert.Equal(21, m.OpsetVersion(""));
        Assert.Contains(ctx.Log, l => l.StartsWith("lower_qdq: opset 11 → 21", StringComparison.Ordinal));
    }

    /// <summary>w8a8-dynamic: each Conv as DynamicQuantizeLinear → ConvInteger (uint8 weights, zero point 128) → rescale, run by
    /// ONNX Runtime, within the accuracy bound.</summary>
    [Fact]
    public void W8a8DynamicLowersConvsToConvInteger()
    {
        using var m = ExportedGraphs.Build("cnn-bn");
        string original = Save(m, "orig");
        var calib = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 4 });
        var held = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 4, Seed = 99 });
        string output = Path.Combine(_dir.FullName, "cnn-bn.w8a8-dynamic.onnx");
        using var result = TestCompiler.Compiler.Compile(m, TestCompiler.RecipeOf("w8a8-dynamic"), new CompileOptions
        {
            Calibration = calib, HeldOut = held, OutputPath = output, OriginalPath = original,
        });
        var ctx = result.Context;
        Assert.DoesNotContain(ctx.Notices, n => n.Contains("int8 weights only", StringComparison.Ordinal));
        var convPlans = ctx.Plan.Layers.Where(p => p.Reasons.Any(r => r.Contains("ConvInteger", StringComparison.Ordinal))).ToList();
        Assert.Equal(3, convPlans.Count);
        Assert.All(convPlans, p => Assert.True(p.WeightFormat.IsInt8Storage && p.ActivationFormat == NumberFormat.UInt8
            && p.LoweredBy is not null));
        double sqnr = result.Verify!.Outputs[0].SqnrDb;
        log.WriteLine($"cnn-bn: w8a8-dynamic output SQNR {sqnr:0.0} dB on random inputs");
        Assert.True(sqnr > 20, $"SQNR {sqnr:0.0} dB");
        using var q = Model.Load(output);
        Assert.Equal(3, q.Graph.Nodes.Count(n => n.Is("ConvInteger")));
        Assert.Equal(3, q.Graph.Nodes.Count(n => n.Is("DynamicQuantizeLinear")));
        Assert.DoesNotContain(q.Graph.Nodes, n => n.Is("Conv"));
    }
}
