using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>
/// Why QuaRot's R4 folded into MatMulInt4Int8 is an op type of its own (<c>ai.quantc.HadamardMatMulInt4Int8</c>) and not an
/// attribute: what ONNX Runtime checks of a custom op when it creates a session. A custom op's unknown attribute passes
/// unchecked (so a libquantc_ops from before the fold would run the model without the transform, silently wrong), an op type
/// the library does not register fails at session creation; and the new op computes Hadamard → MatMulInt4Int8 bit for bit.
/// </summary>
public class CustomOpTypeTests
{
    private const int N = 24, K = 128, Group = 32, Rows = 5;

    private static TypeProto Float() =>
        new() { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } };

    private static readonly float[] X = Enumerable.Range(0, Rows * K).Select(i => MathF.Sin(0.37f * i) * (1 + i % 7)).ToArray();

    /// <summary>One node of <paramref name="op"/> on a float A [Rows, K] (or Hadamard → op with <paramref name="separate"/>), the
    /// attributes given; a fixed int4 weight.</summary>
    private static Model OneNode(string op, (string Name, long Value)[] attributes, int? separate = null, int extraInputs = 0)
    {
        var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var rng = new Random(3);
        var w = Enumerable.Range(0, N * K).Select(_ => (sbyte)rng.Next(-8, 8)).ToArray();
        var ws = Enumerable.Range(0, N * (K / Group)).Select(i => 0.01f + 0.0007f * (i % 17)).ToArray();
        Value a = g.AddInput("a", Float());
        if (separate is { } normalize)
        {
            var h = g.AddNode("Hadamard", [a], domain: CustomOps.Domain, outputNames: ["rotated"]);
            h.SetAttribute("normalize", (long)normalize);
            a = h.Output;
        }
        var inputs = new List<Value?> { a, g.AddInitializer(Tensor.FromFloats("as", [], [1f])),
            g.AddInitializer(Tensor.FromBytes("w", (int)TensorProto.Types.DataType.Uint8, [N, K / 2], Int4Packing.PackChunked(w, N, K))),
            g.AddInitializer(Tensor.FromFloats("ws", [N, K / Group], ws)) };
        for (int i = 0; i < extraInputs; i++) inputs.Add(g.AddInitializer(Tensor.FromFloats($"extra{i}", [N], new float[N])));
        var node = g.AddNode(op, inputs, domain: CustomOps.Domain, outputNames: ["y"]);
        node.SetAttribute("group_size", (long)Group);
        foreach (var (name, value) in attributes) node.SetAttribute(name, value);
        g.AddOutput(node.Output);
        return m;
    }

    private static float[] Run(Model m)
    {
        using var session = OrtModel.CreateSession(m);
        using var ro = new RunOptions();
        using var x = OrtValue.CreateTensorValueFromMemory(X.ToArray(), [Rows, K]);
        using var outs = session.Run(ro, ["a"], [x], ["y"]);
        return outs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void HadamardMatMulInt4Int8IsTheHadamardThenMatMulInt4Int8BitForBit(int normalize)
    {
        using var separate = OneNode("MatMulInt4Int8", [], separate: normalize);
        using var folded = OneNode("HadamardMatMulInt4Int8", [("normalize", normalize)]);
        using var plain = OneNode("MatMulInt4Int8", []);
        var want = Run(separate);
        Assert.Equal(want, Run(folded));
        Assert.NotEqual(want, Run(plain));  // the transform matters for these inputs
        // MatMulInt4Int8's attribute form of the same fold (compiled models from before the op type) is still read
        using var attribute = OneNode("MatMulInt4Int8", [("hadamard", 1), ("hadamard_normalize", normalize)]);
        Assert.Equal(want, Run(attribute));
    }

    /// <summary>The hazard: ONNX Runtime hands a custom op attributes it never declared without a word, so an attribute
    /// cannot change what a node computes without an older library silently computing something else.</summary>
    [Fact]
    public void AnAttributeTheLibraryDoesNotKnowIsIgnoredAtSessionCreation()
    {
        using var plain = OneNode("MatMulInt4Int8", []);
        using var unknown = OneNode("MatMulInt4Int8", [("quantc_no_such_attribute", 1)]);
        Assert.Equal(Run(plain), Run(unknown));
    }

    /// <summary>What an older library does with HadamardMatMulInt4Int8: an op type it does not register fails when the session
    /// is created, naming the op (simulated with a name this library does not register either).</summary>
    [Fact]
    public void AnOpTypeTheLibraryDoesNotRegisterFailsAtSessionCreation()
    {
        using var m = OneNode("HadamardMatMulInt4Int8NotRegistered", [("normalize", 1)]);
        var e = Assert.Throws<BadInputException>(() => { using var s = OrtModel.CreateSession(m); });
        Assert.IsType<OnnxRuntimeException>(e.InnerException);
        Assert.Contains("ai.quantc:HadamardMatMulInt4Int8NotRegistered(-1) is not a registered function/op", e.Message,
            StringComparison.Ordinal);
    }

    /// <summary>The other check ONNX Runtime makes: more inputs than the op's Compute declares fail at session creation too.</summary>
    [Fact]
    public void MoreInputsThanTheOpDeclaresFailAtSessionCreation()
    {
        using var m = OneNode("MatMulInt4Int8", [], extraInputs: 2);  // bias plus one more
        var e = Assert.Throws<BadInputException>(() => { using var s = OrtModel.CreateSession(m); });
        Assert.Contains("has input size 6 not in range [min=0, max=5]", e.Message, StringComparison.Ordinal);
    }

    /// <summary>SwiGluMatMulInt4Int8 (fuse_projections' gate/up with its SwiGLU inside, also an op type of its own): MatMulInt4Int8's
    /// [rows, 2F] product, then silu(gate) · up per element with the gate the first (gate = 0) or the second (1) half of each row,
    /// to float rounding of the sigmoid (its e^x a polynomial with a relative error of about 1e-7).</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void SwiGluMatMulInt4Int8IsTheProductThenSiluOfTheGateTimesUp(int gate)
    {
        const int F = N / 2;
        using var plain = OneNode("MatMulInt4Int8", []);
        using var fused = OneNode("SwiGluMatMulInt4Int8", [("gate", gate)]);
        var wide = Run(plain);
        var y = Run(fused);
        Assert.Equal(Rows * F, y.Length);
        for (int r = 0; r < Rows; r++)
            for (int f = 0; f < F; f++)
            {
                double g = wide[r * N + gate * F + f], u = wide[r * N + (1 - gate) * F + f];
                double want = g / (1 + Math.Exp(-g)) * u;
                Assert.True(Math.Abs(y[r * F + f] - want) <= 2e-6 * Math.Abs(want) + 1e-30,
                    $"row {r} column {f}: {y[r * F + f]} vs {want}");
            }
    }

    /// <summary>A gate attribute other than 0 or 1 fails at session creation, naming it.</summary>
    [Fact]
    public void SwiGluMatMulInt4Int8RefusesABadGate()
    {
        using var m = OneNode("SwiGluMatMulInt4Int8", [("gate", 2)]);
        var e = Assert.ThrowsAny<Exception>(() => Run(m));
        Assert.Contains("gate must be 0 or 1, got 2", e.ToString(), StringComparison.Ordinal);
    }
}
