using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;
using static Quantc.Ir.Tests.TestGraphs;

namespace Quantc.Ir.Tests;

/// <summary>The map's RoPE sites and head regions on the reference llama, and the shared head-axis rules.</summary>
public class RopeAndHeadRegionTests
{
    private static Model TinyLlama()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string f = Path.Combine(d.FullName, "models", "tiny-llama.onnx");
            if (File.Exists(f)) return Model.Load(f);
        }
        throw new FileNotFoundException("models/tiny-llama.onnx");
    }

    [Fact]
    public void EveryQueryAndKeyRopeIsFoundWithItsTablesAndPositions()
    {
        using var m = TinyLlama();
        var map = LayerAnalysis.Analyze(m.Graph);
        int layers = map.Linears.Count(l => l.Name.EndsWith("v_proj", StringComparison.Ordinal));
        Assert.Equal(2 * layers, map.Ropes.Count);
        Assert.All(map.Ropes, r => Assert.Equal(16, r.Half));              // head size 32: pairs (i, i + 16)
        Assert.All(map.Ropes, r => Assert.Equal("position_ids", r.Positions.Name));
        Assert.Single(map.Ropes.Select(r => r.CosTable).Distinct());        // one table shared by every layer
        Assert.DoesNotContain(map.Refusals, r => r.Rule == "rope");
        Assert.Contains("rope   RoPE", map.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void TablesWhoseHalvesDifferAreANearMissWithTheReason()
    {
        using var m = TinyLlama();
        var table = LayerAnalysis.Analyze(m.Graph).Ropes[0].CosTable;
        var t = table.Initializer!;
        var v = t.ToFloat32();
        v[0] += 0.5f;                                                        // first half of row 0 no longer equals its second half
        m.Graph.SetInitializer(table, Tensor.FromFloats(table.Name, t.Dims, v));
        var map = LayerAnalysis.Analyze(m.Graph);
        Assert.Empty(map.Ropes);
        var refused = map.Refusals.Where(r => r.Rule == "rope").ToList();
        Assert.NotEmpty(refused);
        Assert.All(refused, r => Assert.Equal("the cos/sin tables' two halves differ (not the rotate-half layout)", r.Reason));
    }

    [Fact]
    public void EachValueProjectionsRegionEndsAtItsOutputProjectionThroughTheCache()
    {
        using var m = TinyLlama();
        var map = LayerAnalysis.Analyze(m.Graph);
        var vs = map.Linears.Where(l => l.Name.EndsWith("v_proj", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(vs);
        for (int i = 0; i < vs.Count; i++)
        {
            var region = map.HeadRegionOf(vs[i], out string? why);
            Assert.True(region is not null, why);
            Assert.Equal(32, region.HeadSize);
            Assert.Equal([vs[i].Name.Replace("v_proj", "o_proj", StringComparison.Ordinal)], region.Readers.Select(l => l.Name));
            Assert.Equal([$"past_key_values.{i}.value"], region.GraphInputs);
            Assert.Equal([$"present.{i}.value"], region.GraphOutputs);
        }
        // A key projection's output is rotated by RoPE, which does not keep heads whole.
        var k = map.Linears.First(l => l.Name.EndsWith("k_proj", StringComparison.Ordinal));
        Assert.Null(map.HeadRegionOf(k, out string? kWhy));
        Assert.Contains("does not keep heads whole", kWhy, StringComparison.Ordinal);
    }

    [Fact]
    public void HeadAxisRulesKeepTheLastAxisWhole()
    {
        using var m = TorchBlock();
        var g = m.Graph;
        var x = g.Inputs[0];
        Node Concat(long axis) { var n = g.AddNode("Concat", [x, x]); n.SetAttribute("axis", axis); return n; }
        Assert.Null(HeadAxis.Concat(Concat(2), 4));
        Assert.Null(HeadAxis.Concat(Concat(-2), 4));
        Assert.NotNull(HeadAxis.Concat(Concat(-1), 4));
        Assert.NotNull(HeadAxis.Concat(Concat(3), 4));
        Assert.NotNull(HeadAxis.Concat(Concat(2), null));                  // unknown rank: refused

        var expand = g.AddNode("Expand", [x, g.AddInitializer(Tensor.FromValues("shape", (int)DT.Int64, [4], (ReadOnlySpan<long>)[1, 2, 1, 32]))]);
        Assert.Null(HeadAxis.Expand(expand, 32));
        Assert.NotNull(HeadAxis.Expand(expand, null));                     // 32 may broadcast a last axis of 1

        var unsq = g.AddNode("Unsqueeze", [x, g.AddInitializer(Tensor.FromValues("axes", (int)DT.Int64, [1], (ReadOnlySpan<long>)[2]))]);
        Assert.Null(HeadAxis.Unsqueeze(unsq, inputRank: 4, outputRank: null, out int r));
        Assert.Equal(5, r);
        Assert.NotNull(HeadAxis.Unsqueeze(unsq, inputRank: 2, outputRank: null, out _));   // axis 2 of rank 3: the new last axis
        Assert.NotNull(HeadAxis.Unsqueeze(unsq, inputRank: null, outputRank: null, out _));
    }
}
