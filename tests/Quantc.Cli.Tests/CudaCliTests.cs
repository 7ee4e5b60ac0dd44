using Quantc.Core.Runtime;

namespace Quantc.Cli.Tests;

/// <summary><c>verify --ep cuda</c>: on a machine where ONNX Runtime's CUDA provider cannot start, bad input (exit 2) with the reason in
/// one line, nothing else run; where it can, both models run there.</summary>
public sealed class CudaCliTests() : FolderTest("quantc-cuda-cli-")
{
    [Fact]
    public void VerifyOnCudaSaysWhyItCannotRunHere()
    {
        string model = Cli.DefaultModelPath();
        var (code, stdout, stderr) = Run("verify", model, model, "--ep", "cuda", "--samples", "1", "--no-layers");
        if (Cuda.Unavailable is { } why)
        {
            Assert.True(code == 2, $"exit {code}: {stderr}{stdout}");
            Assert.Equal($"quantc: error: --ep cuda: {why}", stderr.Trim());
            Assert.Equal(ExecutionTarget.Cpu, OrtModel.Provider);
        }
        else
        {
            Assert.True(code == 0, stderr + stdout);
        }
        (code, _, stderr) = Run("verify", model, model, "--ep", "tpu");
        Assert.Equal(2, code);
        Assert.Contains("tpu", stderr);
    }
}
