using Quantc.Core.Verification;

namespace Quantc.Core.Tests;

public class ErrorMetricsTests
{
    [Fact]
    public void IdenticalTensorsHaveInfiniteSqnr()
    {
        var e = new ErrorAccumulator();
        float[] x = [1, -2, 3, 0.5f];
        e.Add(x, x);
        Assert.True(double.IsPositiveInfinity(e.SqnrDb));
        Assert.Equal(1.0, e.Cosine, 12);
        Assert.Equal(0, e.MaxAbsError);
    }

    [Fact]
    public void SqnrCosineAndMaxErrorHaveTheirTextbookValues()
    {
        var e = new ErrorAccumulator();
        float[] r = [1, 1, 1, 1];
        float[] t = [1.1f, 0.9f, 1.1f, 0.9f];
        e.Add(r, t);
        Assert.Equal(20.0, e.SqnrDb, 4);           // Σr² = 4, Σd² = 0.04
        Assert.Equal(0.1, e.MaxAbsError, 6);
        Assert.Equal(4 / Math.Sqrt(4 * 4.04), e.Cosine, 6);
        Assert.Equal(0.1, e.Rmse, 6);
    }

    [Fact]
    public void NonFiniteDisagreementIsNeverHidden()
    {
        var e = new ErrorAccumulator();
        e.Add([1f, 2f], [1f, float.NaN]);
        Assert.Equal(1, e.NonFinite);
        Assert.True(double.IsNegativeInfinity(e.SqnrDb));
        Assert.True(double.IsNaN(e.Cosine));          // not 1 over the one finite pair
        Assert.Equal(1, e.TestNonFinite);
    }

    [Fact]
    public void TestValuesThatAreNaNCountEvenWhereTheReferenceIsNaNButSharedInfinitiesDoNot()
    {
        var e = new ErrorAccumulator();
        e.Add([float.NaN, float.NegativeInfinity, float.NegativeInfinity, 1f], [float.NaN, float.NegativeInfinity, float.PositiveInfinity, 1f]);
        Assert.Equal(2, e.TestNonFinite);             // the NaN and the +∞ where the reference has −∞
        Assert.Equal(1, e.NonFinite);                 // only the +∞/−∞ pair disagrees
    }

    [Fact]
    public void PerplexityAndTopOneAgreement()
    {
        const int vocab = 4;
        // Uniform logits: perplexity = vocab. Test model: confident in token 2 everywhere.
        var reference = new float[3 * vocab];
        var test = new float[3 * vocab];
        for (int i = 0; i < 3; i++) test[i * vocab + 2] = 10;
        long[] tokens = [0, 2, 2];
        var acc = new LogitsAccumulator();
        acc.Add(reference, test, vocab, tokens);
        Assert.Equal(vocab, acc.ReferencePerplexity, 6);
        double p2 = Math.Exp(10) / (Math.Exp(10) + 3);
        Assert.Equal(1 / p2, acc.TestPerplexity, 6);
        Assert.Equal(2, acc.ScoredTokens);
        Assert.Equal(0.0, acc.Top1Agreement);    // reference argmax is token 0 (first of equals), test's is token 2

        var same = new LogitsAccumulator();
        same.Add(test, test, vocab);
        Assert.Equal(1.0, same.Top1Agreement);
        Assert.True(double.IsNaN(same.TestPerplexity)); // no tokens, no perplexity
    }
}
