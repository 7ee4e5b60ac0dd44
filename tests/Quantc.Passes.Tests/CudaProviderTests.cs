using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>A fact that runs only where ONNX Runtime's CUDA provider starts and libquantc_ops carries its CUDA kernels.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (Cuda.Unavailable is { } why) Skip = why;
        else if (!Cuda.LibraryHasKernels) Skip = "libquantc_ops was built without its CUDA kernels (no nvcc when custom-ops/ was built)";
    }
}

/// <summary>
/// Compiled models whose <c>ai.quantc</c> operators run on ONNX Runtime's CUDA provider, with libquantc_ops registered: every
/// such node placed on the GPU (ONNX Runtime's profile says which provider ran each node) and the outputs those of the CPU run.
/// Skipped with the reason where there is no GPU, no GPU package (-p:QuantcOrtGpu=true) or no CUDA kernels in the library.
/// </summary>
public class CudaProviderTests
{
    [CudaFact]
    public void QuantcOpsRunOnTheCudaProviderAndMatchTheCpu()
    {
        var dir = Directory.CreateTempSubdirectory("quantc-cuda-");
        try
        {
            foreach (var (arch, recipe) in new[] { ("llama", "w4a8"), ("llama", "hadamard-w8a8"), ("llama", "quarot-w4a8"), ("llama", "fireq"),
                         ("mamba", "mamba-w8a8") })
            {
                var m = TestCompiler.TinyReference(dir, arch);
                var calib = LearnedRoundingTests.Calibration(m, "calib.txt", 2);
                var compiled = TestCompiler.CompileAndReload(dir, m, recipe, calib, out _);
                var ops = compiled.Graph.AllNodes().Where(n => n.Domain == CustomOps.Domain).Select(n => n.OpType).ToHashSet();
                Assert.True(ops.Count > 0, $"{arch} {recipe}: no ai.quantc operator in the compiled model");
                var cpu = Logits(compiled, calib[0], null, out _);
                var gpu = Logits(compiled, calib[0], Cuda.Options(), out var onGpu);
                Assert.True(ops.IsSubsetOf(onGpu), $"{arch} {recipe}: ai.quantc ops not run on CUDA: {string.Join(", ", ops.Except(onGpu))}");
                double num = 0, den = 0;
                for (int i = 0; i < cpu.Length; i++)
                {
                    num += (gpu[i] - cpu[i]) * (double)(gpu[i] - cpu[i]);
                    den += cpu[i] * (double)cpu[i];
                }
                Assert.True(Math.Sqrt(num / den) < 1e-3, $"{arch} {recipe}: CUDA logits differ from the CPU's by {Math.Sqrt(num / den):E2}");
            }
        }
        finally
        {
            dir.Delete(true);
        }
    }

    // The first output of one run; with profiling on, which ai.quantc op types ran on the CUDA provider.
    private static float[] Logits(Model m, CalibrationSample sample, SessionOptions? options, out HashSet<string> onCuda)
    {
        onCuda = [];
        var so = options ?? OrtModel.DefaultOptions();
        var prefix = Path.Combine(Path.GetTempPath(), $"quantc-profile-{Guid.NewGuid():N}");
        if (options is not null)
        {
            so.EnableProfiling = true;
            so.ProfileOutputPathPrefix = prefix;
        }
        using var session = OrtModel.CreateSession(m, null, so);
        var feeds = CalibrationInputs.ToOrt(sample);
        using var ro = new RunOptions();
        var first = session.OutputMetadata.Keys.First();
        float[] result;
        using (var outs = session.Run(ro, feeds.Select(f => f.Name).ToArray(), feeds.Select(f => f.Value).ToArray(), [first]))
            result = outs[0].GetTensorDataAsSpan<float>().ToArray();
        foreach (var f in feeds) f.Value.Dispose();
        if (options is not null)
        {
            var file = session.EndProfiling();
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            foreach (var e in doc.RootElement.EnumerateArray())
                if (e.TryGetProperty("args", out var args) && args.TryGetProperty("provider", out var p) && p.GetString() == Cuda.Provider &&
                    args.TryGetProperty("op_name", out var op))
                    onCuda.Add(op.GetString()!);
            File.Delete(file);
        }
        so.Dispose();
        return result;
    }
}
