using Quantc.Ir.Analysis;
using Quantc.Models;

namespace Quantc.Ir.Tests;

/// <summary>Recognition of Mamba-1 mixers (<see cref="MambaRules"/>) on the reference tiny mamba, and refusals of near misses.</summary>
public class MambaPatternTests
{
    private static Model Tiny() => Model.Load(Path.Combine(AppContext.BaseDirectory, "tiny-mamba.onnx"));

    [Fact]
    public void EveryMixerOfTinyMambaIsRecognisedWithItsParts()
    {
        using var m = ReferenceModels.Build("mamba", "tiny");
        var map = LayerAnalysis.Analyze(m.Graph);
        var cfg = MambaConfig.ForSize("tiny");
        Assert.Equal(Enumerable.Range(0, cfg.NumLayers).Select(i => $"backbone.layers.{i}.mixer"), map.Mambas.Select(b => b.Name));
        Assert.DoesNotContain(map.Refusals, r => r.Rule.StartsWith("mamba", StringComparison.Ordinal));
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            var b = map.Mambas[i];
            string p = $"backbone.layers.{i}.mixer";
            Assert.Equal(p + ".in_proj", b.InProj.Name);
            Assert.Equal(p + ".x_proj", b.XProj.Name);
            Assert.Equal(p + ".dt_proj", b.DtProj.Name);
            Assert.Equal(p + ".out_proj", b.OutProj.Name);
            Assert.Equal("onnx-scan", b.Form);
            Assert.Equal((cfg.InnerSize, (long)cfg.StateSize, (long)cfg.ConvKernel), (b.InnerSize, b.StateSize, b.ConvKernel));
            // Dataflow: x and z are in_proj's halves; the scan reads SiLU(conv(x)), which x_proj reads too.
            Assert.Same(b.InSplit.Outputs[0], b.X);
            Assert.Same(b.InSplit.Outputs[1], b.Z);
            Assert.Same(b.InProj.Output, b.InSplit.Inputs[0]);
            Assert.Same(b.ScanX, b.XProj.Input);
            Assert.Same(b.ScanX, b.Scan.Inputs[2]);
            Assert.Same(b.Softplus.Output, b.Scan.Inputs[1]);
            Assert.Same(b.DbcSplit.Outputs[0], b.DtProj.Input);
            Assert.Same(b.DbcSplit.Outputs[1], b.B);
            Assert.Same(b.DbcSplit.Outputs[2], b.C);
            Assert.Equal($"backbone.layers.{i}.mixer.dt_proj.bias", b.DtBias.Name);
            Assert.Equal($"backbone.layers.{i}.mixer.A_log", b.ALog.Name);
            Assert.True(b.AIsLog);
            Assert.Equal($"backbone.layers.{i}.mixer.D", b.D!.Name);
            Assert.Equal($"past_conv_states.{i}", b.ConvState!.Name);
            Assert.Equal($"past_ssm_states.{i}", b.H0.Name);
            Assert.NotNull(b.ConvStateOut);
            Assert.True(b.ConvStateOut!.IsGraphOutput);
            Assert.True(b.HOut.IsGraphOutput);
            Assert.Same(b.Gated, b.OutProj.Input);
            Assert.Null(b.OutRotation);
            Assert.Equal(["Transpose", "Concat", "Conv", "Transpose", "Sigmoid", "Mul"], b.ConvNodes.Select(n => n.OpType));
        }
        Assert.Contains("mamba  backbone.layers.0.mixer (onnx-scan, d_inner 256, d_state 16, conv 4)", map.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheCommittedTinyMambaIsRecognisedToo()
    {
        using var m = Tiny();
        Assert.Equal(MambaConfig.ForSize("tiny").NumLayers, LayerAnalysis.Analyze(m.Graph).Mambas.Count);
    }

    [Fact]
    public void AScanWhoseBodyIsNotTheRecurrenceIsRefusedWithTheReason()
    {
        using var m = ReferenceModels.Build("mamba", "tiny");
        // Replace the body's y_t = C·h + D·x by C·h − D·x: no longer Mamba's scan.
        var scan = m.Graph.Nodes.First(n => n.Is("Scan"));
        var body = scan.Subgraphs.First();
        var add = body.Outputs[1].Producer!;
        add.OpType = "Sub";
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Equal(3, map.Mambas.Count);
        var r = Assert.Single(map.Refusals, r => r.Rule == "mamba");
        Assert.Contains("does not compute the selective-scan recurrence", r.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void ANonDepthwiseConvIsRefused()
    {
        using var m = ReferenceModels.Build("mamba", "tiny");
        var conv = m.Graph.Nodes.First(n => n.Is("Conv"));
        conv.SetAttribute("group", 1L);
        var r = Assert.Single(LayerAnalysis.Analyze(m.Graph).Refusals, r => r.Rule == "mamba");
        Assert.Contains("not depthwise", r.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void AScanOverTheWrongAxisIsRefused()
    {
        using var m = ReferenceModels.Build("mamba", "tiny");
        m.Graph.Nodes.First(n => n.Is("Scan")).SetAttribute("scan_input_axes", [1L, 0, 1, 1]);
        var r = Assert.Single(LayerAnalysis.Analyze(m.Graph).Refusals, r => r.Rule == "mamba");
        Assert.Contains("axis 1", r.Reason, StringComparison.Ordinal);
    }
}
