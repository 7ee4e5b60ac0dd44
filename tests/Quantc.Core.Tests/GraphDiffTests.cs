using Quantc.Core.Diff;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

public sealed class GraphDiffTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-diff");

    public void Dispose() => _dir.Delete(recursive: true);

    private static Model Build()
    {
        var m = Model.Create();
        var g = m.Graph;
        Value h = g.AddInput("x", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } });
        for (int l = 0; l < 3; l++)
        {
            var w = Enumerable.Range(0, 16).Select(i => (float)Math.Sin(i + l)).ToArray();
            h = g.AddNode("MatMul", [h, g.AddInitializer(Tensor.FromFloats($"model.layers.{l}.mlp.fc.weight", [4, 4], w))],
                name: $"/model/layers.{l}/mlp/fc/MatMul", outputNames: [$"/model/layers.{l}/mlp/fc/MatMul_output_0"]).Output;
            h = g.AddNode("Relu", [h], name: $"/model/layers.{l}/mlp/act/Relu", outputNames: [$"/model/layers.{l}/mlp/act/Relu_output_0"]).Output;
        }
        g.AddOutput(g.AddNode("Identity", [h], name: "out", outputNames: ["y"]).Output);
        return m;
    }

    private Model RoundTrip(Model m, string name)
    {
        var path = Path.Combine(_dir.FullName, name + ".onnx");
        m.Save(path);
        m.Dispose();
        return Model.Load(path);
    }

    [Fact]
    public void AModelAgainstItselfHasAnEmptyDiff()
    {
        using var a = RoundTrip(Build(), "a");
        using var b = RoundTrip(Build(), "b");
        var d = GraphDiff.Compute(a, b);
        Assert.True(d.IsEmpty);
        Assert.Empty(d.Layers);
    }

    [Fact]
    public void ARenamedNodeIsReportedAsRenamedOnly()
    {
        var m = Build();
        var n = m.Graph.Nodes.First(x => x.Name == "/model/layers.1/mlp/act/Relu");
        n.Name = "relu_one";
        using var a = RoundTrip(Build(), "a");
        using var b = RoundTrip(m, "b");
        var d = GraphDiff.Compute(a, b);
        var only = Assert.Single(d.Nodes);
        Assert.Equal(NodeChange.Renamed, only.Change);
        Assert.Equal("/model/layers.1/mlp/act/Relu", only.NameA);
        Assert.Equal("relu_one", only.NameB);
        Assert.Empty(d.Initializers);
    }

    [Fact]
    public void AChangedWeightIsReportedWithItsDelta()
    {
        var m = Build();
        var w = m.Graph["model.layers.2.mlp.fc.weight"];
        var values = w.Initializer!.ToFloat32();
        values[5] += 0.25f;
        m.Graph.SetInitializer(w, Tensor.FromFloats(w.Name, [4, 4], values));
        using var a = RoundTrip(Build(), "a");
        using var b = RoundTrip(m, "b");
        var d = GraphDiff.Compute(a, b);
        Assert.Empty(d.Nodes);
        var init = Assert.Single(d.Initializers);
        Assert.Equal("model.layers.2.mlp.fc.weight", init.NameB);
        Assert.Equal("values changed", init.Detail);
        Assert.Equal(0.25, init.MaxAbsDelta!.Value, 5);
        var layer = Assert.Single(d.Layers);
        Assert.Equal("model.layers.2.mlp.fc", layer.Layer);
    }

    [Fact]
    public void AnInsertedNodeIsReportedAsAddedAndItsConsumerAsRewired()
    {
        var m = Build();
        var g = m.Graph;
        var act0 = g["/model/layers.0/mlp/act/Relu_output_0"];
        var consumer = act0.Uses.Single().Node;
        var scale = g.AddNode("Mul", [act0, g.AddInitializer(Tensor.FromFloats("two", [], [1f]))], name: "/model/layers.1/mlp/fc/smooth", before: consumer);
        consumer.SetInput(0, scale.Output);
        using var a = RoundTrip(Build(), "a");
        using var b = RoundTrip(m, "b");
        var d = GraphDiff.Compute(a, b);
        Assert.Equal(2, d.Nodes.Count);
        var added = d.Nodes.Single(n => n.Change == NodeChange.Added);
        Assert.Equal("Mul", added.OpB);
        var rewired = d.Nodes.Single(n => n.Change == NodeChange.Rewired);
        Assert.Equal("/model/layers.1/mlp/fc/MatMul", rewired.NameB);
        var init = Assert.Single(d.Initializers);
        Assert.Equal("added", init.Detail);
        Assert.Contains(d.Layers, l => l.Layer == "model.layers.1.mlp.fc" && l.Summary.Contains("+Mul", StringComparison.Ordinal));
    }

    [Fact]
    public void ProvenanceMatchesRenamedTensorsAcrossARewrite()
    {
        var m = Build();
        var g = m.Graph;
        var v = g["/model/layers.0/mlp/fc/MatMul_output_0"];
        g.RenameValue(v, "fc0_out_rewritten");
        var p = new Provenance();
        p.Record("fc0_out_rewritten", "/model/layers.0/mlp/fc/MatMul_output_0");
        p.WriteTo(m);
        using var a = RoundTrip(Build(), "a");
        using var b = RoundTrip(m, "b");
        var d = GraphDiff.Compute(a, b);
        Assert.True(d.MatchedByProvenance >= 1);
        Assert.DoesNotContain(d.Nodes, n => n.Change is NodeChange.Added or NodeChange.Removed);
    }
}
