using Quantc.Core.Numerics.Reconstruction;

namespace Quantc.Core.Tests;

/// <summary>The reconstruction loop's products are deterministic whatever the thread count, and keep the summation order of the
/// single-threaded kernel they replaced: per element, a fused multiply-add chain from zero over each 256-deep K block, added to C
/// block after block. The tests compare bits, not values.</summary>
public class GemmOrderTests
{
    /// <summary>C of op(A)·op(B) summed in the kernel's order, one element at a time.</summary>
    private static float[] Reference(float[] a, bool at, float[] b, bool bt, float[] c0, int m, int k, int n, bool accumulate)
    {
        var c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float sum = accumulate ? c0[i * n + j] : 0f;
                for (int k0 = 0; k0 < k; k0 += 256)
                {
                    float acc = 0;
                    for (int q = k0; q < Math.Min(k, k0 + 256); q++)
                        acc = MathF.FusedMultiplyAdd(at ? a[q * m + i] : a[i * k + q], bt ? b[j * k + q] : b[q * n + j], acc);
                    sum += acc;
                }
                c[i * n + j] = sum;
            }
        return c;
    }

    private static int[] Bits(float[] x) => x.Select(BitConverter.SingleToInt32Bits).ToArray();

    [Theory]
    [InlineData(1, 13, 37, 29)]
    [InlineData(3, 13, 37, 29)]
    [InlineData(1, 101, 600, 83)]
    [InlineData(2, 101, 600, 83)]
    [InlineData(3, 101, 600, 83)]
    [InlineData(4, 7, 1, 300)]
    public void ProductsFollowTheKernelOrderOnAnyThreadCount(int threads, int m, int k, int n)
    {
        int keep = Gemm.MaxThreads;
        try
        {
            Gemm.MaxThreads = threads;
            var a = ReconstructionTests.Random(m * k, 1);
            var b = ReconstructionTests.Random(k * n, 2);
            var start = ReconstructionTests.Random(m * n, 3);
            foreach (bool accumulate in new[] { false, true })
            {
                var c = (float[])start.Clone();
                Gemm.Nn(a, b, c, m, k, n, accumulate);
                Assert.Equal(Bits(Reference(a, false, b, false, start, m, k, n, accumulate)), Bits(c));
                c = (float[])start.Clone();
                Gemm.Nt(a, b, c, m, k, n, accumulate);     // b read as [n, k]
                Assert.Equal(Bits(Reference(a, false, b, true, start, m, k, n, accumulate)), Bits(c));
                c = (float[])start.Clone();
                Gemm.Tn(a, b, c, m, k, n, accumulate);     // a read as [k, m]
                Assert.Equal(Bits(Reference(a, true, b, false, start, m, k, n, accumulate)), Bits(c));
                // The same on parts of larger arrays (A and B transposed, every operand at an offset).
                float[] Pad(float[] x, int before) => [.. new float[before], .. x, .. new float[5]];
                var cc = Pad(start, 11);
                Gemm.Slices(Pad(a, 3), 3, true, Pad(b, 7), 7, true, cc, 11, m, k, n, accumulate);
                Assert.Equal(Bits(Reference(a, true, b, true, start, m, k, n, accumulate)), Bits(cc[11..(11 + m * n)]));
                Assert.All(cc[..11].Concat(cc[(11 + m * n)..]), v => Assert.Equal(0f, v));
            }
        }
        finally
        {
            Gemm.MaxThreads = keep;
        }
    }

    [Fact]
    public void ANegativeZeroSumIsStoredAsTheClearedProductStoresIt()
    {
        // 0 + (−0) = +0: a non-accumulating product must not leave −0 where clearing C and adding gave +0.
        var a = new[] { -0f };
        var b = new[] { 1f };
        var c = new[] { 5f };
        Gemm.Nn(a, b, c, 1, 1, 1);
        Assert.Equal(0, BitConverter.SingleToInt32Bits(c[0]));
    }

    [Fact]
    public void RowBlocksOfAProductHaveTheWholeProductsBits()
    {
        // LRQ makes L·U a block of rows at a time; each block must be bit for bit those rows of the whole product.
        int m = 23, k = 300, n = 37;
        var a = ReconstructionTests.Random(m * k, 4);
        var b = ReconstructionTests.Random(k * n, 5);
        var whole = new float[m * n];
        Gemm.Nn(a, b, whole, m, k, n);
        var block = new float[10 * n + 3];
        for (int r0 = 0; r0 < m; r0 += 10)
        {
            int rows = Math.Min(10, m - r0);
            Gemm.NnRows(a, r0 * k, b, block, rows, k, n);
            Assert.Equal(Bits(whole[(r0 * n)..((r0 + rows) * n)]), Bits(block[..(rows * n)]));
        }
        Assert.Throws<ArgumentException>(() => Gemm.NnRows(a, 20 * k, b, block, 10, k, n));
    }
}
