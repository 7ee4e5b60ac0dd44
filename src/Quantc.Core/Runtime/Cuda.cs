using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Runtime;

/// <summary>
/// ONNX Runtime's CUDA execution provider: whether this process can run sessions on a CUDA GPU (the GPU package, built with
/// <c>dotnet build -p:QuantcOrtGpu=true</c>, CUDA 13's libraries and a GPU), session options that do, and whether
/// libquantc_ops carries the CUDA kernels of the <c>ai.quantc</c> ops (custom-ops/cuda, built where nvcc was found).
/// </summary>
public static class Cuda
{
    /// <summary>ONNX Runtime's name of the provider.</summary>
    public const string Provider = "CUDAExecutionProvider";

    private static readonly Lazy<string?> s_unavailable = new(Probe);

    /// <summary>Null when a CUDA session can be made here; else why not, in one line.</summary>
    public static string? Unavailable => s_unavailable.Value;

    /// <summary>The default session options with the CUDA provider first (ONNX Runtime places on the CPU what it cannot run).</summary>
    public static SessionOptions Options(int device = 0)
    {
        var so = OrtModel.CpuOptions();
        AppendTo(so, device);
        return so;
    }

    /// <summary>Adds the CUDA provider (device <paramref name="device"/>) to <paramref name="so"/>; disposes it when that fails.</summary>
    internal static void AppendTo(SessionOptions so, int device = 0)
    {
        try
        {
            so.AppendExecutionProvider_CUDA(device);
        }
        catch
        {
            so.Dispose();
            throw;
        }
    }

    /// <summary>True when libquantc_ops was built with its CUDA kernels (its <c>QuantcOpsInfo</c> says "cuda kernels").</summary>
    public static bool LibraryHasKernels => OpsInfo()?.Contains("cuda kernels", StringComparison.Ordinal) == true;

    /// <summary>libquantc_ops's self-description (version, CPU path, CUDA kernels), or null when the library is missing.</summary>
    public static string? OpsInfo()
    {
        if (!File.Exists(CustomOps.LibraryPath)) return null;
        var lib = NativeLibrary.Load(CustomOps.LibraryPath);
        var info = NativeLibrary.GetExport(lib, "QuantcOpsInfo");
        unsafe
        {
            return Marshal.PtrToStringAnsi(((delegate* unmanaged<IntPtr>)info)());
        }
    }

    private static string? Probe()
    {
        if (!OrtEnv.Instance().GetAvailableProviders().Contains(Provider, StringComparer.Ordinal))
            return "this ONNX Runtime has no CUDA execution provider (the CPU package; build with -p:QuantcOrtGpu=true)";
        try
        {
            // A one-node model on the provider: it loads CUDA's libraries and finds a device, or says why not.
            using var so = Options();
            so.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
            using var session = new InferenceSession(IdentityModel(), so);
            return null;
        }
        catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
            return "the CUDA execution provider does not start: " + e.Message.Split('\n')[0].Trim();
        }
    }

    // An ONNX model y = Identity(x), x float[1] (opset 13), as bytes.
    private static byte[] IdentityModel()
    {
        var m = new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } } };
        var g = new GraphProto { Name = "probe" };
        g.Node.Add(new NodeProto { OpType = "Identity", Input = { "x" }, Output = { "y" } });
        g.Input.Add(FloatValue("x"));
        g.Output.Add(FloatValue("y"));
        m.Graph = g;
        return Google.Protobuf.MessageExtensions.ToByteArray(m);
    }

    private static ValueInfoProto FloatValue(string name) => new()
    {
        Name = name,
        Type = new TypeProto
        {
            TensorType = new TypeProto.Types.Tensor
            {
                ElemType = (int)TensorProto.Types.DataType.Float,
                Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 } } },
            },
        },
    };
}
