using Quantc.Ir;

namespace Quantc.Ir.Tests;

public class NibblesTests
{
    [Fact]
    public void PacksLowNibbleFirstAndReadsBackEveryValue()
    {
        sbyte[] values = [-8, -7, -1, 0, 1, 6, 7];           // odd length: the last byte's high nibble stays 0
        var packed = Nibbles.Pack(values);
        Assert.Equal([0x98, 0x0F, 0x61, 0x07], packed.Select(b => (int)b));
        for (int i = 0; i < values.Length; i++) Assert.Equal(values[i], Nibbles.GetSigned(packed, i));

        var unsigned = Nibbles.Pack(values, offset: 8);      // MatMulNBits' storage: value + 8 in 0..15
        for (int i = 0; i < values.Length; i++) Assert.Equal(values[i] + 8, Nibbles.Get(unsigned, i));
    }

    [Theory]
    [InlineData(64, 0)]
    [InlineData(1000, 0)]
    [InlineData(1000, 8)]
    [InlineData(129, 8)]
    public void LongRunsPackAsElementByElement(int length, int offset)
    {
        var rng = new Random(length + offset);
        var values = Enumerable.Range(0, length).Select(_ => (sbyte)rng.Next(-8, 8)).ToArray();
        var packed = Nibbles.Pack(values, offset);
        var expected = new byte[(length + 1) / 2];
        for (int i = 0; i < length; i++) Nibbles.Put(expected, i, values[i] + offset);
        Assert.Equal(expected, packed);
    }

    [Fact]
    public void TensorConversionReadsTheSameElements()
    {
        sbyte[] values = [3, -4, 7, -8, 0];
        var t = Tensor.FromBytes("w", 22 /* INT4 */, [5], Nibbles.Pack(values));
        Assert.Equal(values.Select(v => (float)v), t.ToFloat32());
    }
}
