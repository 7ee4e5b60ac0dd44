using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Passes;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>
/// Per-token dynamic activations lowered onto ONNX Runtime's integer kernel (lower_qdq): rows divided by their
/// own scale, QuantizeLinear with scale 1, the MatMul fused into MatMulIntegerToFloat, the product multiplied
/// back by the row scale.
/// </summary>
public sealed class DynamicLoweringTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-dynamic");

    public void Dispose() => _dir.Delete(recursive: true);

    private const int Rows = 24, K = 96, N = 40;

    /// <summary>x [Rows, K] → MatMul(W [K, N]) (+ bias) → y; rows of very different magnitudes, a few spiky channels.</summary>
    private static Model Layer(bool bias, int seed)
    {
        var m = Model.Create(opset: 21);
        var g = m.Graph;
        var shape = new Quantc.Onnx.Proto.TensorShapeProto();
        foreach (long d in new long[] { Rows, K }) shape.Dim.Add(new Quantc.Onnx.Proto.TensorShapeProto.Types.Dimension { DimValue = d });
        var x = g.AddInput("x", new Quantc.Onnx.Proto.TypeProto { TensorType = new() { ElemType = 1, Shape = shape } });
        var rng = new Random(seed);
        var w = Enumerable.Range(0, K * N).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.1f).ToArray();
        var mm = g.AddNode("MatMul", [x, g.AddInitializer(Tensor.FromFloats("fc.weight", [K, N], w))], name: "/fc/MatMul", outputNames: [bias ? "mm" : "y"]);
        if (bias)
        {
            var b = Enumerable.Range(0, N).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            g.AddOutput(g.AddNode("Add", [mm.Output, g.AddInitializer(Tensor.FromFloats("fc.bias", [N], b))], name: "/fc/Add", outputNames: ["y"]).Output);
        }
        else g.AddOutput(mm.Output);
        return m;
    }

    private static float[] Input(int seed)
    {
        var rng = new Random(seed);
        var x = new float[Rows * K];
        for (int i = 0; i < Rows; i++)
        {
            float rowScale = MathF.Pow(10, (float)(rng.NextDouble() * 4 - 2)); // 0.01 … 100
            for (int k = 0; k < K; k++)
                x[i * K + k] = (float)(rng.NextDouble() * 2 - 1) * rowScale * (k % 17 == 3 ? 20 : 1);
        }
        return x;
    }

    private static float[] Run(Model m, float[] x)
    {
        using var s = OrtModel.CreateSession(m);
        using var ro = new RunOptions();
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [Rows, K]);
        using var o = s.Run(ro, ["x"], [xv], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>
    /// The reference in C#: per row m = max(max|x|, 1e-12), s = m / levels; q = clamp(round_half_even(x / s)); y = s · Σ q·w_q·s_w (+ b),
    /// with the integer weights and scales the compiled graph stores.
    /// </summary>
    private static float[] Reference(Model compiled, float[] x, int levels, float[]? bias)
    {
        var g = compiled.Graph;
        var wq = g.Initializers.Single(v => v.Name.EndsWith("_int8", StringComparison.Ordinal)).Initializer!.ToFloat32();
        var ws = g.Initializers.Single(v => v.Name == "fc.weight_scale").Initializer!.ToFloat32();
        var y = new float[Rows * N];
        for (int i = 0; i < Rows; i++)
        {
            float max = 0;
            for (int k = 0; k < K; k++) max = Math.Max(max, Math.Abs(x[i * K + k]));
            float m = Math.Max(max, 1e-12f), step = 1f / levels;
            var q = new double[K];
            // As the graph computes it: (x / m) / (1 / levels), rounded half to even: round(x / s) with s = m / levels.
            for (int k = 0; k < K; k++) q[k] = Math.Clamp(Math.Round(x[i * K + k] / m / step, MidpointRounding.ToEven), -128, 127);
            for (int n = 0; n < N; n++)
            {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += q[k] * wq[k * N + n];
                y[i * N + n] = (float)(acc * ws[n] * step * m + (bias?[n] ?? 0));
            }
        }
        return y;
    }

    private Model Compile(Model m, string reduceRange)
    {
        return TestCompiler.CompileAndReload(_dir, m, $$"""
            passes:
              - quantize: { weights: int8, activations: int8, mode: dynamic, reduce_range: {{reduceRange}}, exclude: [] }
              - weights: { method: rtn }
              - lower_qdq
            """, null, out _);
    }

    /// <summary>
    /// The lowered graph computes exactly per-token quantization (within float rounding of the C# reference), ONNX
    /// Runtime runs it as MatMulIntegerToFloat (no float MatMul left in its optimised graph), and the layer's result
    /// keeps its name. With 7-bit weights (reduce_range) ONNX Runtime's U8S8 kernel cannot saturate, on any CPU.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PerTokenActivationsRunOnTheIntegerKernelExactly(bool bias)
    {
        using var m = Layer(bias, 3);
        var b = bias ? m.Graph.Initializers.Single(v => v.Name == "fc.bias").Initializer!.ToFloat32() : null;
        using var compiled = Compile(m, "true");
        Assert.Contains(compiled.Graph.Nodes, n => n.OpType == "QuantizeLinear");
        Assert.Contains(compiled.Graph.Nodes, n => n.OpType == "Mul" && n.Output.Name == (bias ? "mm" : "y"));
        var x = Input(7);
        var got = Run(compiled, x);
        var want = Reference(compiled, x, 127, b);
        for (int i = 0; i < Rows; i++)
        {
            double rowMax = 0;
            for (int n = 0; n < N; n++) rowMax = Math.Max(rowMax, Math.Abs(want[i * N + n]));
            for (int n = 0; n < N; n++)
                Assert.True(Math.Abs(got[i * N + n] - want[i * N + n]) <= 1e-5 * rowMax + 1e-30,
                    $"row {i} col {n}: ONNX Runtime {got[i * N + n]} vs reference {want[i * N + n]} (row max {rowMax})");
        }
        var ops = OptimizedOps(compiled);
        log.WriteLine($"ORT optimised graph: {string.Join(", ", ops.GroupBy(o => o).Select(g => $"{g.Key} {g.Count()}"))}");
        Assert.Contains("MatMulIntegerToFloat", ops);
        Assert.DoesNotContain("MatMul", ops);
    }

    private List<string> OptimizedOps(Model m)
    {
        var path = Path.Combine(_dir.FullName, $"opt-{Guid.NewGuid():N}.onnx");
        using (var o = OrtModel.DefaultOptions())
        {
            o.OptimizedModelFilePath = path;
            using var s = OrtModel.CreateSession(m, options: o);
        }
        using var opt = Model.Load(path);
        return opt.Graph.Nodes.Select(n => n.OpType).ToList();
    }
}
