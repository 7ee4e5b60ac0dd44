using Quantc.Core.Calibration;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

public sealed class VerifierTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-verify");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>A 3-layer MLP x → fc0 → relu → fc1 → relu → fc2 → y; <paramref name="perturb"/> shifts the weights of layer 1.</summary>
    private string Mlp(string name, float perturb, bool renameMiddle = false)
    {
        using var m = Model.Create();
        var g = m.Graph;
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "n" });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 8 });
        Value h = g.AddInput("x", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } });
        var rng = new Random(1);
        var prov = new Provenance();
        for (int l = 0; l < 3; l++)
        {
            var w = Enumerable.Range(0, 64).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            if (l == 1) for (int k = 0; k < w.Length; k++) w[k] += (perturb - 1) * 0.05f * (k % 3 - 1);
            string mmName = renameMiddle && l == 1 ? "renamed_fc1" : $"fc{l}";
            h = g.AddNode("MatMul", [h, g.AddInitializer(Tensor.FromFloats($"fc{l}.weight", [8, 8], w))], outputNames: [mmName]).Output;
            if (renameMiddle && l == 1) prov.Record(mmName, "fc1");
            if (l < 2) h = g.AddNode("Relu", [h], outputNames: [$"act{l}"]).Output;
        }
        g.AddOutput(g.AddNode("Identity", [h], outputNames: ["y"]).Output);
        if (renameMiddle) prov.WriteTo(m);
        var path = Path.Combine(_dir.FullName, name + ".onnx");
        m.Save(path);
        return path;
    }

    private static List<CalibrationSample> Data()
    {
        var rng = new Random(3);
        return Enumerable.Range(0, 4).Select(_ =>
        {
            var s = new CalibrationSample();
            s.Inputs["x"] = (Enumerable.Range(0, 5 * 8).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), [5, 8]);
            return s;
        }).ToList();
    }

    [Fact]
    public void AModelAgainstItselfHasNoError()
    {
        using var a = Model.Load(Mlp("a", 1));
        using var b = Model.Load(Mlp("b", 1));
        var r = Verifier.Run(a, b, Data());
        var y = Assert.Single(r.Outputs);
        Assert.True(double.IsPositiveInfinity(y.SqnrDb));
        Assert.Equal(0, y.MaxAbsError);
        Assert.Equal(5, r.Layers.Count); // fc0, act0, fc1, act1, fc2
        Assert.All(r.Layers, l => Assert.True(double.IsPositiveInfinity(l.SqnrDb)));
    }

    [Fact]
    public void LocalisationPointsAtThePerturbedLayerFirst()
    {
        using var a = Model.Load(Mlp("a", 1));
        using var b = Model.Load(Mlp("b", 3f, renameMiddle: true));
        var r = Verifier.Run(a, b, Data(), options: new VerifyOptions { GroupBytes = 64 });
        Assert.True(r.Outputs[0].SqnrDb < 60, string.Join("; ", r.Outputs.Select(o => $"{o.Name} {o.SqnrDb}").Concat(r.Layers.Select(l => $"{l.CompiledName} {l.SqnrDb}"))));
        var first = r.Layers.First(l => !double.IsPositiveInfinity(l.SqnrDb));
        Assert.Equal("renamed_fc1", first.CompiledName); // found through provenance, not by name
        Assert.Equal("fc1", first.OriginalName);
        Assert.True(double.IsPositiveInfinity(r.Layers.Single(l => l.CompiledName == "act0").SqnrDb));
    }

    /// <summary>Provenance keeps every transform a tensor went through, in order, once each: verify compares a tensor that only
    /// PrefixQuant's prefix changed (which it undoes) but not one also rotated or smoothed.</summary>
    [Fact]
    public void ProvenanceAppendsEachTransformOnce()
    {
        var p = new Quantc.Core.Verification.Provenance();
        p.Record("b", "a");
        p.RecordTransformed("b", "rotated");
        p.RecordTransformed("b", "prefix");
        p.RecordTransformed("b", "prefix");
        Assert.Equal("a#rotated#prefix", p.OriginOf("b"));
        Assert.Equal("a", p.SourceOf("b"));
        Assert.True(p.IsTransformed("b"));
        p.Record("c", "b");  // c stands for b: the same origin, transforms included
        Assert.Equal("a#rotated#prefix", p.OriginOf("c"));
        p.RecordTransformed("d", "prefix");
        Assert.Equal("d#prefix", p.OriginOf("d"));
    }
}
