using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Quantc.Core.Runtime;

/// <summary>What the CPU this process runs on offers the integer kernels of ONNX Runtime and ai.quantc.</summary>
public static class CpuFeatures
{
    /// <summary>
    /// True when the CPU has int8 dot-product instructions that accumulate u8·s8 products in 32 bits without an
    /// intermediate saturation: AVX-512 VNNI or AVX-VNNI on x86 (CPUID leaf 7: ECX bit 11, and sub-leaf 1 EAX
    /// bit 4), and every 64-bit Arm CPU ONNX Runtime's kernels target (they use sdot/udot or widening
    /// multiplies). False on x86 CPUs with only AVX2/AVX-512BW, where ONNX Runtime's U8S8 GEMM multiplies with
    /// vpmaddubsw and its int16 pair sums saturate.
    /// </summary>
    public static bool HasInt8DotProduct { get; } = Detect();

    /// <summary>"x86-64 AVX2, no VNNI", "x86-64 AVX-512 VNNI", "Arm64".</summary>
    public static string Description { get; } = Describe();

    private static bool Avx512Vnni() => X86Base.IsSupported && (X86Base.CpuId(7, 0).Ecx & (1 << 11)) != 0;
    private static bool AvxVnni() => X86Base.IsSupported && (X86Base.CpuId(7, 1).Eax & (1 << 4)) != 0;

    private static bool Detect() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 or Architecture.X86 => Avx512Vnni() || AvxVnni(),
        _ => true,
    };

    private static string Describe()
    {
        if (RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.X86))
            return RuntimeInformation.ProcessArchitecture.ToString();
        string simd = Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : "SSE";
        string vnni = Avx512Vnni() ? "AVX-512 VNNI" : AvxVnni() ? "AVX-VNNI" : "no VNNI";
        return $"x86-64 {simd}, {vnni}";
    }
}
