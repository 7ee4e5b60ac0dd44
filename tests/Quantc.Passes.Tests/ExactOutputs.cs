using Xunit.Abstractions;

namespace Quantc.Passes.Tests;

/// <summary>Bit-identity of two ORT runs' outputs (OrtRuns.Outputs), for lowerings that must not change a single bit.</summary>
internal static class ExactOutputs
{
    /// <summary>Every output of <paramref name="a"/> equals <paramref name="b"/>'s bit for bit (max |a − b| = 0), each logged.</summary>
    public static void AssertEqual(Dictionary<string, float[]> a, Dictionary<string, float[]> b, string step, ITestOutputHelper log)
    {
        Assert.NotEmpty(a);
        foreach (var (name, va) in a)
        {
            double err = va.Zip(b[name]).Max(p => Math.Abs((double)p.First - p.Second));
            log.WriteLine($"{step} {name}: max |err| {err:G3} over {va.Length} elements");
            Assert.True(err == 0 && va.Length > 0 && va.Length == b[name].Length, $"{step} {name}: max |err| {err:G3}");
        }
    }
}
