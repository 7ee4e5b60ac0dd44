using System.Runtime.InteropServices;

namespace Quantc.Models.Tests;

public class WeightGenTests
{
    [Fact]
    public void AnySliceEqualsTheSameRangeOfTheWhole()
    {
        var g = new WeightGen(RandomStream.For(5, "w"), 37, 53, 0.1).ScaleRow(3, 10f).ScaleCol(7, 0f).Set(4, 9, 42f);
        var all = g.ToArray();
        foreach (var (start, len) in new[] { (0, 1), (1, 2), (3, 100), (158, 1), (1000, 961), (1960, 1) })
        {
            var part = new float[len];
            g.Fill(start, part);
            Assert.Equal(all.AsSpan(start, len).ToArray(), part);
        }
        Assert.Equal(42f, all[4 * 53 + 9]);
        Assert.Equal(0f, all[11 * 53 + 7]);
        var data = new GeneratedTensorData(g);
        using var ms = new MemoryStream();
        data.CopyTo(ms);
        Assert.Equal(MemoryMarshal.AsBytes(all.AsSpan()).ToArray(), ms.ToArray());
        Assert.Equal(MemoryMarshal.AsBytes(all.AsSpan(10, 5)).ToArray(), data.Slice(40, 20).ToArray());
        Assert.Equal(MemoryMarshal.AsBytes(all.AsSpan()).Slice(41, 7).ToArray(), data.Slice(41, 7).ToArray());
    }

    [Fact]
    public void NormalsAreStandardAndDetMathIsAccurate()
    {
        var rs = RandomStream.For(0, "stats");
        var x = new float[200_000];
        rs.FillNormal(0, x, 1.0);
        double mean = x.Average(v => (double)v), var2 = x.Average(v => (v - mean) * (v - mean));
        Assert.InRange(mean, -0.01, 0.01);
        Assert.InRange(var2, 0.98, 1.02);
        foreach (var v in new[] { 1e-300, 0.001, 0.5, 1, 2, 10, 12345.678 })
            Assert.Equal(Math.Log(v), DetMath.Log(v), Math.Abs(Math.Log(v)) * 1e-14 + 1e-15);
        foreach (var v in new[] { -700.0, -3, 0, 0.5, 3, 700 })
            Assert.Equal(1.0, DetMath.Exp(v) / Math.Exp(v), 1e-13);
        foreach (var v in new[] { 0.0, 0.3, 1.5, 3.1, 100, 2047.5, -5 })
        {
            DetMath.SinCos(v, out double s, out double c);
            Assert.Equal(Math.Sin(v), s, 1e-12);
            Assert.Equal(Math.Cos(v), c, 1e-12);
        }
    }
}
