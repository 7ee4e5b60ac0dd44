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

/// <summary>Pass options declared once on a record: bound from the recipe, checked, documented.</summary>
public class PassOptionsTests
{
    private sealed record DemoOptions : PassOptions
    {
        [Option("a whole number", Min = 1)]
        public int GroupSize { get; init; } = 128;

        [Option("a share", Min = 0, MinExclusive = true, Max = 1)]
        public double ClipRatio { get; init; } = 1.0;

        [Option("a switch")]
        public bool Portable { get; init; }

        [Option("a choice", Choices = "minmax|percentile")]
        public string XMethod { get; init; } = "minmax";

        [Option("patterns", Regex = true)]
        public IReadOnlyList<string> Exclude { get; init; } = ["^lm_head$"];

        [Option("numbers", Min = 0, Max = 1)]
        public IReadOnlyList<double> Grid { get; init; } = [];

        public override string? Check() => Portable && GroupSize != 128 ? "'group_size' needs portable: false" : null;
    }

    private static DemoOptions Bind(string yaml) =>
        PassOptions.Bind<DemoOptions>(Recipe.Parse($"passes:\n  - demo: {yaml}\n", "r.yaml").Steps[0].Parameters);

    [Fact]
    public void OptionsBindWithDefaultsAndSnakeCaseNames()
    {
        var d = Bind("{}");
        Assert.Equal((128, 1.0, false, "minmax"), (d.GroupSize, d.ClipRatio, d.Portable, d.XMethod));
        Assert.Equal(["^lm_head$"], d.Exclude);
        Assert.False(d.Given("group_size"));
        var o = Bind("{ group_size: 32, clip_ratio: 0.95, x_method: percentile, exclude: [a, b], grid: [0.25, 1] }");
        Assert.Equal(32, o.GroupSize);
        Assert.Equal(0.95, o.ClipRatio);
        Assert.Equal("percentile", o.XMethod);
        Assert.Equal(["a", "b"], o.Exclude);
        Assert.Equal([0.25, 1.0], o.Grid);
        Assert.True(o.Given("group_size"));
        Assert.False(o.Given("portable"));
        Assert.Equal(["group_size", "clip_ratio", "portable", "x_method", "exclude", "grid"], OptionInfo.Of(typeof(DemoOptions)).Select(x => x.Name));
        Assert.Equal("clip_ratio (number in (0, 1], default 1): a share", OptionInfo.Of(typeof(DemoOptions))[1].ToString());
    }

    [Theory]
    [InlineData("{ group_size: 0 }", "'group_size' = 0 must be at least 1")]
    [InlineData("{ group_size: 2.5 }", "is not a whole number")]
    [InlineData("{ clip_ratio: 0 }", "'clip_ratio' = 0 must be in (0, 1]")]
    [InlineData("{ clip_ratio: .nan }", "is not a finite number")]
    [InlineData("{ clip_ratio: -.inf }", "is not a finite number")]
    [InlineData("{ portable: maybe }", "is not true or false")]
    [InlineData("{ x_method: mse }", "must be one of minmax, percentile")]
    [InlineData("{ exclude: ['(x'] }", "not a valid regular expression")]
    [InlineData("{ grid: [0.5, 7] }", "'grid' = 7 must be in [0, 1]")]
    [InlineData("{ grid: [abc] }", "has 'abc', not a number")]
    [InlineData("{ portable: true, group_size: 64 }", "'group_size' needs portable: false")]
    [InlineData("{ groupsize: 64 }", "unknown parameter 'groupsize'")]
    public void BadOptionsAreClearErrorsNamingTheRecipeAndPass(string yaml, string words)
    {
        var e = Assert.Throws<BadInputException>(() => Bind(yaml));
        Assert.Contains(words, e.Message);
        Assert.StartsWith("r.yaml: pass 1 (demo)", e.Message);
    }

    [Theory]
    [InlineData("a: &a [x, x]\nb: &b [*a, *a]\npasses: [ { demo: { exclude: *b } } ]\n", "YAML aliases (*a) are not allowed")]
    [InlineData("passes:\n  - {[a]: 1}\n", "a key must be a plain name, not a list")]
    [InlineData("passes:\n  - demo: { grid: [1], grid: [0] }\n", "not valid YAML")]
    [InlineData("passes: [ demo\n  - : :", "not valid YAML")]
    public void HostileRecipesAreRefusedBeforeAnythingIsBuilt(string yaml, string words)
    {
        var e = Assert.Throws<BadInputException>(() => Recipe.Parse(yaml, "r.yaml"));
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void DeepAndHugeRecipesAreRefusedWithoutExhaustingTheStack()
    {
        var deep = "passes: " + new string('[', 100_000) + new string(']', 100_000) + "\n";
        Assert.Contains("nested more than 32 levels deep", Assert.Throws<BadInputException>(() => Recipe.Parse(deep, "r.yaml")).Message);
        var huge = "passes: [ demo ]\n#" + new string('x', Recipe.MaxBytes) + "\n";
        Assert.Contains("a recipe may have at most", Assert.Throws<BadInputException>(() => Recipe.Parse(huge, "r.yaml")).Message);
    }
}
