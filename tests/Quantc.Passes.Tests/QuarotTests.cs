using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Models;
using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>The quarot-w4a8 recipe against the naive w4a8 baseline, compiled and run in ONNX Runtime (libquantc_ops registered for ai.quantc).</summary>
public sealed class QuarotTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-quarot");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Text(string name) => Path.Combine(AppContext.BaseDirectory, name);

    /// <summary>
    /// The tiny reference LLaMA, optionally without its massive-activation circuit: the trigger flag
    /// cleared from the embedding and from the gate/up rows that read it (models/README.md). What remains
    /// is an ordinary network with SmoothQuant-style channel outliers.
    /// </summary>
    private Model Load(bool circuit)
    {
        var path = Path.Combine(_dir.FullName, $"llama-{Guid.NewGuid():N}.onnx");
        ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        var m = Model.Load(path);
        if (circuit) return m;
        TriggerFlag.Remove(m, readers: true);
        var p2 = Path.Combine(_dir.FullName, $"llama-plain-{Guid.NewGuid():N}.onnx");
        m.Save(p2);
        m.Dispose();
        return Model.Load(p2);
    }

    private static (IReadOnlyList<CalibrationSample> Samples, IReadOnlyList<long[]>? Tokens) Data(Model m, string file, int n) =>
        DataLoader.Load(m, Text(file), new DataOptions { SplitDocuments = false, SequenceLength = 64, MaxSamples = n }) is var d ? (d.Samples, d.Tokens) : default;

    private (double Sqnr, double Top1, Model Compiled) Compile(bool circuit, string recipe)
    {
        using var original = Load(circuit);
        Model compiled;
        using (var m = Load(circuit)) compiled = TestCompiler.CompileAndReload(_dir, m, recipe, Data(m, "calib.txt", 8).Samples, out _);
        var (samples, tokens) = Data(original, "eval.txt", 4);
        var r = Verifier.Run(original, compiled, samples, tokens, new VerifyOptions { PerLayer = false });
        double sqnr = r.Outputs.Single(o => o.Name == "logits").SqnrDb;
        log.WriteLine($"{recipe} ({(circuit ? "reference model" : "without the massive-activation circuit")}): logits SQNR {sqnr:0.00} dB, top-1 {r.Logits!.Top1Agreement:P1}");
        return (sqnr, r.Logits.Top1Agreement, compiled);
    }

    /// <summary>
    /// On an ordinary network (the reference model without its massive-activation circuit) QuaRot's
    /// rotations make W4A8 far better than the same quantization without them (measured 27.2 vs 16.3 dB),
    /// and the portable lowering (standard ONNX only) computes the same as MatMulInt4Int8.
    /// </summary>
    [Fact]
    public void QuarotBeatsNaiveW4A8()
    {
        var (naive, naiveTop1, n) = Compile(false, "w4a8");
        var (quarot, quarotTop1, q) = Compile(false, "quarot-w4a8");
        var (portable, _, p) = Compile(false, "quarot-w4a8-portable");
        using (n) using (q) using (p)
        {
            Assert.Contains(n.Graph.Nodes, x => x.OpType == "MatMulInt4Int8");
            Assert.Contains(q.Graph.Nodes, x => x.OpType == "MatMulInt4Int8");
            Assert.DoesNotContain(p.Graph.AllNodes(), x => x.Domain == "ai.quantc");
        }
        Assert.True(quarot > naive + 5, $"quarot-w4a8 {quarot:0.00} dB should beat naive w4a8 {naive:0.00} dB by > 5 dB");
        Assert.True(quarotTop1 > naiveTop1 + 0.05, $"top-1 {quarotTop1:P1} vs {naiveTop1:P1}");
        Assert.True(Math.Abs(portable - quarot) < 1, $"portable {portable:0.00} dB vs custom op {quarot:0.00} dB");
    }

    [Fact]
    public void QuarotCompilesDeterministically()
    {
        byte[] Bytes()
        {
            using var m = Load(false);
            TestCompiler.Compile(m, "quarot-w4a8", Data(m, "calib.txt", 4).Samples);
            var path = Path.Combine(_dir.FullName, $"det-{Guid.NewGuid():N}.onnx");
            m.Save(path);
            return File.ReadAllBytes(path);
        }
        Assert.Equal(Bytes(), Bytes());
    }

    /// <summary>
    /// The reference model as built keeps a residual direction (the trigger flag) that no layer writes and
    /// that its gate/up weights amplify 6–30×: quantized residual writers (o_proj) in the rotated basis leak
    /// their int4 error into it, which the unrotated model never does (its zero columns quantize to zero).
    /// So on this model QuaRot loses to the naive baseline; the test pins that finding (and fails if it changes).
    /// </summary>
    [Fact]
    public void OnTheReferenceModelTheTriggerDirectionDefeatsTheRotation()
    {
        var (naive, _, n) = Compile(true, "w4a8");
        var (quarot, _, q) = Compile(true, "quarot-w4a8");
        n.Dispose();
        q.Dispose();
        Assert.True(quarot < naive, $"quarot-w4a8 {quarot:0.00} dB vs w4a8 {naive:0.00} dB: the reference model's trigger direction no longer defeats the rotation — update bench/RESULTS.md");
    }
}
