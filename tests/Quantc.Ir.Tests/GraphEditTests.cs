using Quantc.Onnx.Proto;

namespace Quantc.Ir.Tests;

/// <summary>IR edits keep the graph consistent; Validate reports planted inconsistencies.</summary>
public class GraphEditTests
{
    private static TypeProto T() => new() { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } };

    /// <summary>x → A(Relu) → B(Neg) → C(Add with x) → y; and D(Abs) on x, unused.</summary>
    internal static (Model M, Node A, Node B, Node C, Node D) Chain()
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T());
        var a = g.AddNode("Relu", [x], name: "A");
        var b = g.AddNode("Neg", [a.Output], name: "B");
        var c = g.AddNode("Add", [b.Output, x], name: "C", outputNames: ["y"]);
        var d = g.AddNode("Abs", [x], name: "D");
        g.AddOutput(c.Output);
        return (m, a, b, c, d);
    }

    [Fact]
    public void EditsKeepTheGraphValid()
    {
        var (m, a, b, c, d) = Chain();
        using (m)
        {
            var g = m.Graph;
            g.Validate();
            // Insert a node between A and B.
            var mid = g.AddNode("Sigmoid", [a.Output], name: "mid", before: b);
            b.SetInput(0, mid.Output);
            g.Validate();
            Assert.Single(a.Output.Uses);
            // Replace B by Abs: new node, rewire uses, remove the old one.
            var abs = g.AddNode("Abs", [mid.Output], name: "B2", before: b);
            g.ReplaceAllUses(b.Output, abs.Output);
            g.RemoveNode(b);
            g.Validate();
            Assert.Same(abs.Output, c.Inputs[0]);
            // Rename a value; add an initializer with a unique name.
            g.RenameValue(mid.Output, "gate");
            Assert.Same(mid.Output, g["gate"]);
            var k1 = g.AddInitializer(Tensor.FromFloats("k", [], [2f]));
            var k2 = g.AddInitializer(Tensor.FromFloats("k", [], [3f]));
            Assert.NotEqual(k1.Name, k2.Name);
            Assert.NotEqual("gate", g.UniqueName("gate"));
            g.Validate();
            // Dead code: D and both unused initializers go.
            int removed = g.RemoveDeadCode();
            Assert.Equal(3, removed);
            Assert.DoesNotContain(d, g.Nodes);
            g.Validate();
            Assert.Throws<InvalidOperationException>(() => g.RemoveNode(a)); // still used
            Assert.Throws<InvalidOperationException>(() => g.RenameValue(a.Output, "y"));
        }
    }

    [Fact]
    public void ValidateReportsPlantedInconsistencies()
    {
        var (m, a, b, c, _) = Chain();
        using (m)
        {
            var g = m.Graph;
            g.RemoveNode(a, force: true);                  // B now reads a value nobody produces
            var problems = g.FindProblems();
            Assert.Contains(problems, p => p.Contains("'B'", StringComparison.Ordinal) || p.Contains("Neg", StringComparison.Ordinal));
            Assert.Throws<GraphValidationException>(g.Validate);
        }
        var (m2, a2, b2, _, _) = Chain();
        using (m2)
        {
            a2.SetInput(0, b2.Output);                     // A ← B ← A: a cycle
            Assert.Contains(m2.Graph.FindProblems(), p => p.Contains("cycle", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void SubgraphsCaptureOuterValuesAndStayConsistent()
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", T());
        var cond = g.AddInput("cond", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 9 } });
        var relu = g.AddNode("Relu", [x]);
        var iff = g.AddNode("If", [cond], outputNames: ["y"]);
        var then = iff.SetSubgraph("then_branch", "then");
        then.AddOutput(then.AddNode("Neg", [relu.Output], outputNames: ["t"]).Output);
        var els = iff.SetSubgraph("else_branch", "else");
        els.AddOutput(els.AddNode("Abs", [relu.Output], outputNames: ["e"]).Output);
        g.AddOutput(iff.Output);
        g.Validate();
        Assert.Equal(2, relu.Output.Uses.Count); // captured by both branches
        Assert.Contains(relu.Output, then.CapturedValues());
        Assert.Throws<InvalidOperationException>(() => g.RemoveNode(relu)); // captured, so still used
        g.MoveBefore(iff, relu);
        g.Validate();
        Assert.Equal([relu, iff], g.TopologicalOrder());   // the If depends on Relu through its branches
    }

    [Fact]
    public void MoreEditsKeepTheGraphValid()
    {
        var (m, a, b, c, d) = Chain();
        using (m)
        {
            var g = m.Graph;
            // Out-of-order insertion, then sorting.
            var late = g.AddNode("Exp", [c.Output], name: "late", before: a);
            g.Validate();                                   // list order is not a validity rule; dependencies are
            g.SortTopologically();
            Assert.True(g.Nodes.ToList().IndexOf(late) > g.Nodes.ToList().IndexOf(c));
            g.MoveBefore(d, a);
            g.Validate();
            // A new graph output, replaced by another value.
            g.AddOutput(late.Output);
            g.SetOutput(1, d.Output);
            g.Validate();
            Assert.Same(d.Output, g.Outputs[1]);
            g.RemoveNode(late);
            // Unique renames, initializers set and removed.
            string renamed = g.RenameValueUnique(b.Output, "y");   // "y" is taken: a fresh name
            Assert.NotEqual("y", renamed);
            Assert.Same(b.Output, g[renamed]);
            var k = g.AddInitializer(Tensor.FromFloats("k", [2], [1f, 2f]));
            g.SetInitializer(k, Tensor.FromFloats("other", [2], [3f, 4f]));
            Assert.Equal("k", k.Initializer!.Name);
            Assert.Equal([3f, 4f], k.Initializer.ToFloat32());
            var use = g.AddNode("Add", [k, k], name: "use_k");
            Assert.Throws<InvalidOperationException>(() => g.RemoveInitializer(k));
            g.RemoveNode(use);
            g.RemoveInitializer(k);
            Assert.Null(g.Find("k"));
            g.Validate();
            // Replace all uses, leaving one reader alone.
            var e1 = g.AddNode("Neg", [a.Output], name: "e1");
            var e2 = g.AddNode("Neg", [a.Output], name: "e2");
            g.ReplaceAllUses(a.Output, g["x"], except: e2);
            Assert.Same(g["x"], e1.Inputs[0]);
            Assert.Same(a.Output, e2.Inputs[0]);
            g.Validate();
        }
    }

    [Fact]
    public void ValidateReportsEveryKindOfPlantedInconsistency()
    {
        static List<string> Plant(Action<Graph, Node, Node, Node, Node> plant)
        {
            var (m, a, b, c, d) = Chain();
            using (m)
            {
                plant(m.Graph, a, b, c, d);
                return m.Graph.FindProblems();
            }
        }
        // A use list that names a reader which reads something else.
        Assert.Contains(Plant((g, a, b, c, d) => a.Output.UseList.Add(new Use(d, 0))), p => p.Contains("stale use by Abs(D)", StringComparison.Ordinal));
        // A reader missing from the use list.
        Assert.Contains(Plant((g, a, b, c, d) => a.Output.UseList.Clear()), p => p.Contains("'A_out' does not list its use by Neg(B)", StringComparison.Ordinal));
        // A value whose producer field names the wrong node.
        Assert.Contains(Plant((g, a, b, c, d) => a.Output.Producer = d), p => p.Contains("does not record Relu(A) as its producer", StringComparison.Ordinal));
        // A value from another model.
        Assert.Contains(Plant((g, a, b, c, d) =>
        {
            using var other = Model.Create();
            b.InputList[0] = other.Graph.AddInput("stranger", T());
        }), p => p.Contains("reads 'stranger', which is not defined in its scope", StringComparison.Ordinal));
        // An initializer without its tensor.
        Assert.Contains(Plant((g, a, b, c, d) => g.AddInitializer(Tensor.FromFloats("k", [], [1f])).Initializer = null), p => p.Contains("initializer 'k' has no tensor", StringComparison.Ordinal));
        // A graph output whose producer was removed.
        Assert.Contains(Plant((g, a, b, c, d) => g.RemoveNode(c, force: true)), p => p.Contains("graph output 'y' is not defined", StringComparison.Ordinal));
        // A clean graph has none.
        Assert.Empty(Plant((g, a, b, c, d) => { }));
    }
}
