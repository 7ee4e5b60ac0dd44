using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

public class PipelineTests
{
    private sealed class ScalePass(double factor) : IPass
    {
        public string Name => "scale";
        public PassKind Kind => PassKind.FunctionPreserving;
        public double Factor => factor;
        public void Run(PassContext c)
        {
            var g = c.Model.Graph;
            var relu = g.Nodes.Single(n => n.OpType == "Relu");
            var x = relu.Inputs[0]!;
            var mul = g.AddNode("Mul", [x, g.AddInitializer(Tensor.FromFloats("f", [], [(float)factor]))], before: relu);
            relu.SetInput(0, mul.Output);
            c.Provenance.Record(mul.Output.Name, x.Name);
        }
    }

    private sealed class BreakPass : IPass
    {
        public string Name => "break";
        public PassKind Kind => PassKind.FunctionPreserving;
        public void Run(PassContext c) => c.Model.Graph.RemoveNode(c.Model.Graph.Nodes[0], force: true);
    }

    internal static PassRegistry Registry()
    {
        var r = new PassRegistry();
        r.Register(new PassInfo("scale", PassKind.FunctionPreserving, "multiply before relu", p => new ScalePass(p.GetDouble("factor", 1.0))));
        r.Register(new PassInfo("break", PassKind.FunctionPreserving, "breaks the graph", _ => new BreakPass()));
        return r;
    }

    internal static Model Small()
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } });
        var id = g.AddNode("Identity", [x], outputNames: ["h"]);
        g.AddOutput(g.AddNode("Relu", [id.Output], outputNames: ["y"]).Output);
        return m;
    }

    [Fact]
    public void RecipesParseFromYaml()
    {
        var r = Recipe.Parse("""
            name: demo
            description: two passes
            passes:
              - scale: { factor: 2.5 }
              - scale
            """, "demo.yaml");
        Assert.Equal("demo", r.Name);
        Assert.Equal(2, r.Steps.Count);
        var passes = new PassManager(Registry()).Instantiate(r);
        Assert.Equal(2.5, ((ScalePass)passes[0]).Factor);
        Assert.Equal(1.0, ((ScalePass)passes[1]).Factor);
    }

    [Theory]
    [InlineData("passes:\n  - nope\n", "unknown pass 'nope'")]
    [InlineData("passes:\n  - scale: { factr: 2 }\n", "unknown parameter 'factr'")]
    [InlineData("passes:\n  - scale: { factor: big }\n", "is not a number")]
    [InlineData("name: x\n", "no 'passes' list")]
    [InlineData("passes: [\n", "not valid YAML")]
    [InlineData("pases:\n  - scale\n", "unknown recipe key 'pases'")]
    public void BadRecipesAreClearErrors(string yaml, string message)
    {
        var e = Assert.Throws<BadInputException>(() => new PassManager(Registry()).Instantiate(Recipe.Parse(yaml, "r.yaml")));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("r.yaml", e.Message);
    }

    [Fact]
    public void ThePassManagerTimesPassesAndWritesProvenance()
    {
        using var m = Small();
        var ctx = new PassContext(m);
        var pm = new PassManager(Registry());
        var timings = pm.Run(pm.Instantiate(Recipe.Parse("passes:\n  - scale: { factor: 2 }\n", "r")), ctx);
        var t = Assert.Single(timings);
        Assert.Equal(2, t.NodesBefore);
        Assert.Equal(3, t.NodesAfter);
        var prov = Provenance.Of(m);
        Assert.Equal("h", prov.OriginOf(m.Graph.Nodes.Single(n => n.OpType == "Mul").Output.Name));
    }

    [Fact]
    public void APassThatBreaksTheGraphIsNamed()
    {
        using var m = Small();
        var pm = new PassManager(Registry());
        var e = Assert.Throws<InvalidOperationException>(() => pm.Run(pm.Instantiate(Recipe.Parse("passes:\n  - break\n", "r")), new PassContext(m)));
        Assert.Contains("pass 'break'", e.Message);
    }
}
