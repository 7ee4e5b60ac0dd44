using Quantc.Core.Calibration;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>
/// quantize_kv's float8 caches (format fp8 and COAT's fp8_expanded): the first layer's cache, whose keys and values do not depend
/// on any earlier quantization, holds exactly what the format gives back for the float model's keys and values — plain float8
/// e4m3fn steps of absmax/448 per token and head, or the round trip of <see cref="ExpandedFp8Vector"/> (the reconstruction
/// loop's codec) with one group per token and head; the expansion lowers the cache's error; the log says what was simulated.
/// </summary>
public sealed class KvFloat8Tests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-kvfp8");

    public void Dispose() => _dir.Delete(recursive: true);

    private const int HeadDim = 32;

    // The float model's and the compiled model's layer-0 caches on the same 40 tokens.
    private (Dictionary<string, float[]> Float, Dictionary<string, float[]> Compiled, PassContext Ctx) Caches(string flavor,
        string format)
    {
        using var original = LoadLlama(_dir, flavor, massive: false);
        using var m = LoadLlama(_dir, flavor, massive: false);
        var ctx = RunRecipe(m, $"passes: [{{quantize_kv: {{format: {format}}}}}]");
        foreach (var line in ctx.Log) log.WriteLine(line);
        using var compiled = Model.Load(Save(_dir, m));
        using var a = OrtModel.CreateSession(original);
        using var b = OrtModel.CreateSession(compiled);
        var sample = CalibrationInputs.FromTokens(original.Graph, EvalTokens(original, 1, 40)[0]);
        return (Outputs(a, sample), Outputs(b, sample), ctx);
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("ortgenai")]
    public void TheExpandedCacheIsTheCodecsRoundTripPerTokenAndHead(string flavor)
    {
        var (f, c, ctx) = Caches(flavor, "fp8_expanded");
        Assert.Equal(4, ctx.Log.Count(l => l.Contains("keys and values float8 e4m3fn per token and head (32) with COAT's dynamic range " +
            "expansion (max and k per group): 1.25 bytes per value in a real cache; simulated", StringComparison.Ordinal)));
        foreach (var name in new[] { "present.0.key", "present.0.value" })
        {
            var x = f[name];
            var y = c[name];
            Assert.Equal(x.Length, y.Length);
            var codec = new ExpandedFp8Vector(x.Length, HeadDim);
            codec.Write(x);
            var expected = new float[x.Length];
            codec.Read(expected);
            int same = 0;
            double worst = 0;
            for (int i = 0; i < x.Length; i++)
            {
                double d = Math.Abs(y[i] - expected[i]), scale = Math.Max(Math.Abs(expected[i]), 1e-30);
                if (d <= 1e-5 * scale) same++;
                worst = Math.Max(worst, d / scale);
            }
            log.WriteLine($"{flavor} {name}: {same}/{x.Length} within 1e-5 of the codec, worst relative {worst:E2}");
            // Pow in the graph against exp(k·ln) in the codec: a value on a rounding tie may land one float8 step away (at most
            // 2⁻³ relative before the 1/k power); everything else agrees to float32 rounding.
            Assert.True(same >= x.Length * 0.99, $"{name}: only {same} of {x.Length} values match the codec");
            Assert.True(worst <= 0.13, $"{name}: a value {worst:E2} relative away from the codec");
        }
    }

    [Fact]
    public void ThePlainCacheHoldsFloat8StepsOfTheHeadsAbsmax()
    {
        var (f, c, ctx) = Caches("torch", "fp8");
        Assert.Equal(4, ctx.Log.Count(l => l.Contains("keys and values float8 e4m3fn per token and head (32): 1.125 bytes per value",
            StringComparison.Ordinal)));
        foreach (var name in new[] { "present.0.key", "present.3.value" })
        {
            var y = c[name];
            for (int o = 0; o < y.Length; o += HeadDim)
            {
                var head = y.AsSpan(o, HeadDim);
                float max = 0;
                foreach (float v in head) max = Math.Max(max, Math.Abs(v));
                float s = max / 448f;
                foreach (float v in head)
                    Assert.True(Math.Abs(Int4Fp8.RoundFp8(v / s) - v / s) <= 1e-5f * Math.Max(1f, Math.Abs(v / s)),
                        $"{name}[{o}..]: {v} is not a float8 step of {s}");
            }
        }
        Assert.True(RelativeError(f["present.0.key"], c["present.0.key"]) > 0, "the plain float8 cache changed nothing");
    }

    /// <summary>COAT's claim for its expansion, on the cache: the relative step shrinks by k, so the error falls.</summary>
    [Fact]
    public void TheExpansionLowersTheCachesError()
    {
        var plain = Caches("torch", "fp8");
        var expanded = Caches("torch", "fp8_expanded");
        foreach (var name in new[] { "present.0.key", "present.0.value" })
        {
            double p = RelativeError(plain.Float[name], plain.Compiled[name]);
            double e = RelativeError(expanded.Float[name], expanded.Compiled[name]);
            log.WriteLine($"{name}: relative squared error plain float8 {p:E3}, expanded {e:E3} ({10 * Math.Log10(p / e):0.0} dB)");
            Assert.True(e < p, $"{name}: expanded {e:E3} is not below plain {p:E3}");
        }
    }

    private static double RelativeError(float[] x, float[] y)
    {
        double num = 0, den = 0;
        for (int i = 0; i < x.Length; i++) { num += (double)(x[i] - y[i]) * (x[i] - y[i]); den += (double)x[i] * x[i]; }
        return num / den;
    }
}
