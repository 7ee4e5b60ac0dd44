using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>The ai.quantc ops run through ONNX Runtime and agree with plain C# references.</summary>
public class CustomOpsTests
{
    private static TypeProto T(int elem) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = elem } };

    private static float[] Gauss(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();
    }

    [Fact]
    public void EveryBaseOrderIsAHadamardMatrix()
    {
        foreach (int m in Hadamard.Orders)
        {
            var h = Hadamard.BaseMatrix(m);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++)
                {
                    int dot = 0;
                    for (int k = 0; k < m; k++) dot += h[i * m + k] * h[j * m + k];
                    Assert.True(dot == (i == j ? m : 0), $"order {m}, rows {i},{j}: {dot}");
                }
        }
    }

    [Theory]
    [InlineData(64)]
    [InlineData(12)]
    [InlineData(24)]
    [InlineData(52)]
    [InlineData(208)]
    [InlineData(140)]
    [InlineData(1536)]   // 12 · 128
    [InlineData(156)]    // Goethals–Seidel, w = 39
    [InlineData(624)]    // 156 · 4
    [InlineData(172)]    // Goethals–Seidel, w = 43
    [InlineData(344)]    // 172 · 2: the tiny reference llama's MLP width
    [InlineData(1376)]   // 172 · 8
    public void HadamardOpMatchesTheCSharpMatrix(int n)
    {
        using var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var x = g.AddInput("x", T(1));
        g.AddOutput(g.AddNode("Hadamard", [x], domain: CustomOps.Domain, outputNames: ["y"]).Output);
        using var session = OrtModel.CreateSession(m);
        const int rows = 3;
        var data = Gauss(rows * n, n);
        using var input = OrtValue.CreateTensorValueFromMemory(data, [rows, n]);
        using var ro = new RunOptions();
        using var outs = session.Run(ro, ["x"], [input], ["y"]);
        var y = outs[0].GetTensorDataAsSpan<float>().ToArray();

        // Dense reference: y = H x / sqrt(n) with the C# matrix.
        var h = Hadamard.Matrix(n);
        var fast = new float[rows * n];
        Hadamard.Transform(data, fast, n);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < n; i++)
            {
                double acc = 0;
                for (int j = 0; j < n; j++) acc += h[(long)i * n + j] * data[r * n + j];
                float expected = (float)(acc / Math.Sqrt(n));
                Assert.True(Math.Abs(y[r * n + i] - expected) <= 1e-5 * (1 + Math.Abs(expected)) * 10, $"n={n} row {r} [{i}]: op {y[r * n + i]}, ref {expected}");
                Assert.True(Math.Abs(fast[r * n + i] - expected) <= 1e-4 * (1 + Math.Abs(expected)), $"C# fast transform n={n} [{i}]");
            }
    }

    [Theory]
    [InlineData(156)]
    [InlineData(172)]
    [InlineData(344)]
    [InlineData(140)]
    public void HadamardOpBuildsTheCSharpMatrixElementForElement(int n)
    {
        // Unnormalised op on the identity: row i of the output is H·e_i = column i of H, exactly.
        using var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var x = g.AddInput("x", T(1));
        var node = g.AddNode("Hadamard", [x], domain: CustomOps.Domain, outputNames: ["y"]);
        node.SetAttribute("normalize", 0L);
        g.AddOutput(node.Output);
        using var session = OrtModel.CreateSession(m);
        var eye = new float[n * n];
        for (int i = 0; i < n; i++) eye[i * n + i] = 1;
        using var input = OrtValue.CreateTensorValueFromMemory(eye, [n, n]);
        using var ro = new RunOptions();
        using var outs = session.Run(ro, ["x"], [input], ["y"]);
        var y = outs[0].GetTensorDataAsSpan<float>().ToArray();
        var h = Hadamard.Matrix(n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                Assert.True(y[i * n + j] == h[j * n + i], $"n={n}: C++ H[{j},{i}] = {y[i * n + j]}, C# {h[j * n + i]}");
    }

    [Fact]
    public void GoethalsSeidelOrdersComeFromZeroAutocorrelationSequences()
    {
        foreach (int m in new[] { 156, 172 })
        {
            var seqs = Hadamard.GoethalsSeidelSequences(m);
            Assert.NotNull(seqs);
            Assert.Equal(4, seqs.Count);
            int w = m / 4;
            Assert.All(seqs, s => Assert.Equal(w, s.Length));
            for (int shift = 1; shift < w; shift++)
            {
                int paf = 0;
                foreach (var s in seqs)
                    for (int j = 0; j < w; j++) paf += (s[j] == '+' ? 1 : -1) * (s[(j + shift) % w] == '+' ? 1 : -1);
                Assert.True(paf == 0, $"order {m}: summed PAF at shift {shift} is {paf}");
            }
        }
        Assert.Null(Hadamard.GoethalsSeidelSequences(140));
        Assert.True(Hadamard.TrySplit(11008, out long p2, out int order) && order == 172 && p2 == 64);
    }

    [Fact]
    public void HadamardOpRejectsUnsupportedSizesClearly()
    {
        using var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var x = m.Graph.AddInput("x", T(1));
        m.Graph.AddOutput(m.Graph.AddNode("Hadamard", [x], domain: CustomOps.Domain, outputNames: ["y"]).Output);
        using var session = OrtModel.CreateSession(m);
        using var input = OrtValue.CreateTensorValueFromMemory(new float[100], [1, 100]);
        using var ro = new RunOptions();
        var e = Assert.Throws<OnnxRuntimeException>(() => session.Run(ro, ["x"], [input], ["y"]));
        Assert.Contains("not 2^k times a supported order", e.Message);
    }

    [Theory]
    [InlineData(1, 64, 64, true)]
    [InlineData(7, 33, 200, false)]
    [InlineData(32, 96, 512, true)]
    public void MatMulInt8MatchesTheCSharpReferenceExactly(int rows, int n, int k, bool withBias)
    {
        var rng = new Random(rows * 131 + n);
        var a = Enumerable.Range(0, rows * k).Select(_ => (sbyte)rng.Next(-128, 128)).ToArray();
        var b = Enumerable.Range(0, n * k).Select(_ => (sbyte)rng.Next(-128, 128)).ToArray();
        var bScale = Enumerable.Range(0, n).Select(i => 0.001f * (i + 1)).ToArray();
        var bias = Enumerable.Range(0, n).Select(i => 0.5f * i - 3).ToArray();
        const float aScale = 0.0173f;

        using var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var x = g.AddInput("a", T(3));
        var inputs = new List<Value?>
        {
            x, g.AddInitializer(Tensor.FromFloats("a_scale", [], [aScale])),
            g.AddInitializer(Tensor.FromValues<sbyte>("b", 3, [n, k], b)),
            g.AddInitializer(Tensor.FromFloats("b_scale", [n], bScale)),
        };
        if (withBias) inputs.Add(g.AddInitializer(Tensor.FromFloats("bias", [n], bias)));
        g.AddOutput(g.AddNode("MatMulInt8", inputs, domain: CustomOps.Domain, outputNames: ["y"]).Output);
        using var session = OrtModel.CreateSession(m);
        using var input = OrtValue.CreateTensorValueFromMemory(a, [rows, k]);
        using var ro = new RunOptions();
        using var outs = session.Run(ro, ["a"], [input], ["y"]);
        var y = outs[0].GetTensorDataAsSpan<float>().ToArray();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                int acc = 0;
                for (int t = 0; t < k; t++) acc += a[r * k + t] * b[j * k + t];
                float expected = acc * (aScale * bScale[j]) + (withBias ? bias[j] : 0f);
                Assert.Equal(expected, y[r * n + j]);
            }
    }

    [Fact]
    public void MatMulInt8RejectsMismatchedShapes()
    {
        using var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var x = g.AddInput("a", T(3));
        g.AddOutput(g.AddNode("MatMulInt8", [x, g.AddInitializer(Tensor.FromFloats("s", [], [1f])), g.AddInitializer(Tensor.FromValues<sbyte>("b", 3, [4, 8], new sbyte[32])),
            g.AddInitializer(Tensor.FromFloats("bs", [4], new float[4]))], domain: CustomOps.Domain, outputNames: ["y"]).Output);
        using var session = OrtModel.CreateSession(m);
        using var input = OrtValue.CreateTensorValueFromMemory(new sbyte[6], [1, 6]);
        using var ro = new RunOptions();
        var e = Assert.Throws<OnnxRuntimeException>(() => session.Run(ro, ["a"], [input], ["y"]));
        Assert.Contains("disagree on K", e.Message);
    }
}
