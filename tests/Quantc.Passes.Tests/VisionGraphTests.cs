using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// w8a8 on <see cref="VisionGraphs"/>' <c>upsample-net</c>: ConvTranspose layers quantized per output channel on weight axis 1,
/// a Gemm without bias on ONNX Runtime's QGemm, each output verified, and what ONNX Runtime's optimized graph runs.
/// </summary>
public sealed class VisionGraphTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-vision");

    public void Dispose() => _dir.Delete(recursive: true);

    private (CompileResult Result, string Output) CompileUpsampleNet(string recipe, string graph = "upsample-net")
    {
        using var m = VisionGraphs.Build(graph);
        string original = Path.Combine(_dir.FullName, "orig.onnx");
        m.Save(original);
        var calib = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 8 });
        var held = DataLoader.Load(m, "random", new DataOptions { MaxSamples = 4, Seed = 99 });
        string output = Path.Combine(_dir.FullName, $"upsample-net.{recipe}.onnx");
        var result = TestCompiler.Compiler.Compile(m, TestCompiler.RecipeOf(recipe), new CompileOptions
        {
            Calibration = calib, HeldOut = held, OutputPath = output, OriginalPath = original,
        });
        foreach (var line in result.Context.Log) log.WriteLine(line);
        foreach (var o in result.Verify!.Outputs) log.WriteLine($"{recipe}: output {o.Name}: SQNR {o.SqnrDb:0.0} dB");
        return (result, output);
    }

    private Dictionary<string, int> OptimizedOps(string path)
    {
        string optimized = Path.Combine(_dir.FullName, Path.GetFileNameWithoutExtension(path) + ".opt.onnx");
        using (var so = new SessionOptions
               { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized })
        using (new InferenceSession(path, so)) { }
        using var opt = Model.Load(optimized);
        var ops = opt.Graph.Nodes.GroupBy(n => n.OpType).ToDictionary(x => x.Key, x => x.Count());
        log.WriteLine(string.Join(", ", ops.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value}")));
        return ops;
    }

    [Fact]
    public void W8a8QuantizesConvTransposePerOutputChannelOnAxisOne()
    {
        var (result, output) = CompileUpsampleNet("w8a8");
        using var _ = result;
        var ctx = result.Context;
        Assert.Equal(5, ctx.Plan.Layers.Count());
        Assert.All(ctx.Plan.Layers, p => Assert.True(p.WeightFormat.IsInt8Storage && p.ActivationFormat == NumberFormat.UInt8,
            $"{p.Name}: {p.WeightFormat} / {p.ActivationFormat}: {string.Join("; ", p.Reasons)}"));
        Assert.All(result.Verify!.Outputs, o => Assert.True(o.SqnrDb > 20, $"{o.Name}: SQNR {o.SqnrDb:0.0} dB"));

        using var q = Model.Load(output);
        Assert.Equal(2, q.Graph.Nodes.Count(n => n.Is("ConvTranspose")));
        foreach (var ct in q.Graph.Nodes.Where(n => n.Is("ConvTranspose")))
        {
            var dq = ct.Inputs[1]!.Producer!;
            Assert.True(dq.Is("DequantizeLinear"));
            Assert.Equal(1, dq.GetInt("axis", 0));
            var wq = dq.Inputs[0]!.Initializer!;
            Assert.Equal(wq.Dims[1], dq.Inputs[1]!.Initializer!.ElementCount);   // one scale per output channel
            Assert.True(ct.Output.Uses.Any(u => u.Node.Is("QuantizeLinear")), "the ConvTranspose output is quantized");
        }
        // ONNX Runtime 1.31's CPU provider fuses the Convs into QLinearConv and the Gemm without bias into QGemm (float output:
        // QGemm's y_scale is optional, so no output QuantizeLinear is needed and none is added); it has no integer ConvTranspose
        // kernel, so each ConvTranspose stays a float op on its dequantized int8 weight (the QDQ form other providers fuse).
        var ops = OptimizedOps(output);
        Assert.Equal(2, ops.GetValueOrDefault("QLinearConv"));
        Assert.Equal(1, ops.GetValueOrDefault("QGemm"));
        Assert.Equal(2, ops.GetValueOrDefault("ConvTranspose"));
        Assert.Equal(0, ops.GetValueOrDefault("Conv") + ops.GetValueOrDefault("Gemm"));
    }

    /// <summary>A grouped (group 4) and a depthwise ConvTranspose: weight axis 1 holds out/group channels, so the per-output-channel
    /// scales are a blocked DequantizeLinear along axis 0 (one block of in/group input channels per group).</summary>
    [Fact]
    public void W8a8QuantizesGroupedConvTransposePerOutputChannelInBlocks()
    {
        var (result, output) = CompileUpsampleNet("w8a8", "grouped-upsample");
        using var _ = result;
        Assert.Equal(4, result.Context.Plan.Layers.Count());
        Assert.All(result.Context.Plan.Layers, p => Assert.True(p.WeightFormat.IsInt8Storage && p.LoweredBy is not null,
            $"{p.Name}: {p.WeightFormat}: {string.Join("; ", p.Reasons)}"));
        var mask = Assert.Single(result.Verify!.Outputs);
        Assert.True(mask.SqnrDb > 20, $"mask: SQNR {mask.SqnrDb:0.0} dB");

        using var q = Model.Load(output);
        var groups = new List<long>();
        foreach (var ct in q.Graph.Nodes.Where(n => n.Is("ConvTranspose")))
        {
            long group = ct.GetInt("group", 1);
            groups.Add(group);
            var dq = ct.Inputs[1]!.Producer!;
            Assert.True(dq.Is("DequantizeLinear"));
            var wq = dq.Inputs[0]!.Initializer!;
            Assert.Equal(0, dq.GetInt("axis", 1));
            Assert.Equal(wq.Dims[0] / group, dq.GetInt("block_size", 0));
            Assert.Equal([group, .. wq.Dims.Skip(1)], dq.Inputs[1]!.Initializer!.Dims.ToArray());
            // Output channel gi·out/group + oc has one scale, the same at every kernel position.
            var scales = dq.Inputs[1]!.Initializer!.ToFloat32();
            int kk = (int)(wq.Dims[2] * wq.Dims[3]);
            for (int o = 0; o < scales.Length / kk; o++) Assert.All(scales.Skip(o * kk).Take(kk), s => Assert.Equal(scales[o * kk], s));
            Assert.True(scales.Distinct().Count() > 1, "per output channel, not one scale");
        }
        Assert.Equal([4L, 16L], groups);
        Assert.Equal(2, OptimizedOps(output).GetValueOrDefault("QLinearConv"));
    }
}
