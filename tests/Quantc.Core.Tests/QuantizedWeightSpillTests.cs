using Quantc.Core.Numerics;
using Quantc.Onnx;

namespace Quantc.Core.Tests;

/// <summary>A rounded weight moved to the spill file (values and scales, issue 22 item 10) reads back the same numbers.</summary>
public sealed class QuantizedWeightSpillTests
{
    [Theory]
    [InlineData(0, true)]
    [InlineData(32, true)]
    [InlineData(32, false)]
    public void SpilledValuesAndScalesReadBackTheSame(int group, bool symmetric)
    {
        var rng = new Random(group + (symmetric ? 1 : 0));
        int n = 48, k = 96;
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var q = symmetric ? WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, group)
            : WeightQuantizer.RtnAsymmetric(w, n, k, QuantFormat.Int4, group);
        using var file = new SpillFile();   // in the temp folder, deleted once open
        var s = q.SpillTo(file);
        Assert.Equal((long)n * k + q.Scales.Length * 4L, file.Length);
        Assert.Equal(q.Values, s.Values);
        Assert.Equal(q.Scales, s.Scales);
        Assert.Equal(q.ZeroPoints, s.ZeroPoints);
        Assert.Equal(q.Dequantize(), s.Dequantize());
        for (int i = 0; i < 5; i++) Assert.Equal(q.ScaleAt(i * 7, i * 13), s.ScaleAt(i * 7, i * 13));
        Assert.Same(s, s.SpillTo(file));
    }
}
