using Quantc.Core.Numerics;
using Xunit;

namespace Quantc.Core.Tests;

public class TranspositionTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(8, 8)]
    [InlineData(61, 130)]
    [InlineData(130, 61)]
    [InlineData(520, 1031)]   // past ParallelElements: on the thread pool, with row blocks and tiles that do not divide it
    public void FloatsAndBytesAreTheTranspose(int rows, int cols)
    {
        var rng = new Random(rows * 31 + cols);
        var f = new float[rows * cols];
        var b = new sbyte[rows * cols];
        for (int i = 0; i < f.Length; i++)
        {
            f[i] = (float)rng.NextDouble() - 0.5f;
            b[i] = (sbyte)rng.Next(-128, 128);
        }
        var ft = new float[f.Length + 3];
        var bt = new sbyte[b.Length + 3];
        ft[^1] = 7f;
        bt[^1] = 7;
        Transposition.Floats(f, ft, rows, cols);
        Transposition.Bytes(b, bt, rows, cols);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
            {
                Assert.Equal(f[i * cols + j], ft[j * rows + i]);
                Assert.Equal(b[i * cols + j], bt[j * rows + i]);
            }
        Assert.Equal(7f, ft[^1]);                          // nothing written past rows × cols
        Assert.Equal((sbyte)7, bt[^1]);
    }

    [Fact]
    public void ShortBuffersAreRefused()
    {
        Assert.Throws<ArgumentException>(() => Transposition.Floats(new float[5], new float[6], 2, 3));
        Assert.Throws<ArgumentException>(() => Transposition.Bytes(new sbyte[6], new sbyte[5], 2, 3));
    }
}
