using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Numerics;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

/// <summary>A test of the packed GEMMs: skipped where the library runs its reference path (a CPU without AVX2, or
/// QUANTC_ISA=reference), which packs nothing.</summary>
public sealed class PackedGemmFactAttribute : FactAttribute
{
    public PackedGemmFactAttribute()
    {
        if (Cuda.OpsInfo() is not { } info) Skip = "libquantc_ops is missing";
        else if (info.Contains("isa reference", StringComparison.Ordinal)) Skip = $"the library runs its reference path ({info})";
    }
}

/// <summary>Tests that count the library's packed weights run alone: a session made by a test beside them would move the count.</summary>
[CollectionDefinition(nameof(PackingCountCollection), DisableParallelization = true)]
public sealed class PackingCountCollection;

/// <summary>
/// When libquantc_ops packs constant weights for its GEMMs: as ONNX Runtime's own kernels pre-pack theirs, when the session
/// creates the kernels — so the first run (a GenAI session's first prefill) does not pay for it — unless the session sets
/// <c>session.disable_prepacking</c>, as quantc's load check of a written model does; then at the first run, and a session
/// that never runs holds no packed copy. Either way the outputs are the same bits.
/// </summary>
[Collection(nameof(PackingCountCollection))]
public sealed class WeightPackingTests : IDisposable
{
    private const int N = 48, K = 128, Group = 32, Rows = 6;
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-packing-");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>The library's count of packed weights (<c>QuantcOpsPackedWeights</c>): the file ONNX Runtime loads, one library
    /// in the process.</summary>
    private static unsafe long PackedWeights()
    {
        var export = NativeLibrary.GetExport(NativeLibrary.Load(CustomOps.LibraryPath), "QuantcOpsPackedWeights");
        return ((delegate* unmanaged<long>)export)();
    }

    private static TypeProto Float() =>
        new() { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } };

    /// <summary>a [Rows, K] → MatMulInt4Int8 (float A, int4 weight [N, K]) → MatMulInt8 (float A, int8 weight [N, N]) → y: two
    /// constant weights the library packs.</summary>
    private static Model TwoProjections()
    {
        var m = Model.Create(opset: 21);
        m.SetOpset(CustomOps.Domain, 1);
        var g = m.Graph;
        var rng = new Random(5);
        var w4 = Enumerable.Range(0, N * K).Select(_ => (sbyte)rng.Next(-8, 8)).ToArray();
        var w8 = Enumerable.Range(0, N * N).Select(_ => (byte)rng.Next(-127, 128)).ToArray();
        var a = g.AddInput("a", Float());
        var first = g.AddNode("MatMulInt4Int8", [a, g.AddInitializer(Tensor.FromFloats("as", [], [1f])),
            g.AddInitializer(Tensor.FromBytes("w4", (int)TensorProto.Types.DataType.Uint8, [N, K / 2], Int4Packing.PackChunked(w4, N, K))),
            g.AddInitializer(Tensor.FromFloats("ws4", [N, K / Group],
                Enumerable.Range(0, N * (K / Group)).Select(i => 0.01f + 0.0007f * (i % 17)).ToArray()))],
            domain: CustomOps.Domain, outputNames: ["h"]);
        first.SetAttribute("group_size", (long)Group);
        var second = g.AddNode("MatMulInt8", [first.Output, g.AddInitializer(Tensor.FromFloats("hs", [], [0.05f])),
            g.AddInitializer(Tensor.FromBytes("w8", (int)TensorProto.Types.DataType.Int8, [N, N], w8)),
            g.AddInitializer(Tensor.FromFloats("ws8", [N], Enumerable.Range(0, N).Select(i => 0.002f + 0.0001f * i).ToArray()))],
            domain: CustomOps.Domain, outputNames: ["y"]);
        g.AddOutput(second.Output);
        return m;
    }

    private static float[] Run(InferenceSession session)
    {
        var x = Enumerable.Range(0, Rows * K).Select(i => MathF.Sin(0.21f * i) * (1 + i % 5)).ToArray();
        using var ro = new RunOptions();
        using var input = OrtValue.CreateTensorValueFromMemory(x, [Rows, K]);
        using var outs = session.Run(ro, ["a"], [input], ["y"]);
        return outs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [PackedGemmFact]
    public void WeightsArePackedWhenTheSessionIsCreatedUnlessItDisablesPrePacking()
    {
        using var m = TwoProjections();

        long before = PackedWeights();
        using var eager = OrtModel.CreateSession(m);
        Assert.Equal(before + 2, PackedWeights());  // both weights, before any run
        var want = Run(eager);
        Assert.Equal(before + 2, PackedWeights());  // and not again at the first run
        Assert.Contains(want, v => v != 0);

        using (var so = OrtModel.DefaultOptions())
        {
            so.AddSessionConfigEntry("session.disable_prepacking", "1");
            using var lazy = OrtModel.CreateSession(m, options: so);
            Assert.Equal(before + 2, PackedWeights());  // nothing at creation
            Assert.Equal(want, Run(lazy));              // the same bits
            Assert.Equal(before + 4, PackedWeights());  // packed at the first run
            Run(lazy);
            Assert.Equal(before + 4, PackedWeights());  // once
        }

        // quantc's load check of a written model runs nothing and packs nothing.
        string path = Path.Combine(_dir.FullName, "two.onnx");
        m.Save(path);
        Assert.Null(OrtModel.LoadError(path, customOps: true));
        Assert.Equal(before + 4, PackedWeights());
    }
}
