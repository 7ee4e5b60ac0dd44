namespace Quantc.Core.Verification;

/// <summary>Streaming error statistics between a reference tensor and a test tensor.</summary>
public sealed class ErrorAccumulator
{
    private double _signal, _noise, _dot, _refNorm, _testNorm;
    private long _count;

    /// <summary>Smallest reference value seen.</summary>
    public double ReferenceMin { get; private set; } = double.PositiveInfinity;

    /// <summary>Largest reference value seen.</summary>
    public double ReferenceMax { get; private set; } = double.NegativeInfinity;

    /// <summary>Largest absolute difference seen.</summary>
    public double MaxAbsError { get; private set; }

    /// <summary>Elements compared.</summary>
    public long Count => _count;

    /// <summary>Elements where one side was NaN/∞ and the other was not.</summary>
    public long NonFinite { get; private set; }

    /// <summary>Elements of the test tensor that are NaN, or infinite where the reference is not the same infinity.</summary>
    public long TestNonFinite { get; private set; }

    /// <summary>Folds one pair of equally long tensors in.</summary>
    public void Add(ReadOnlySpan<float> reference, ReadOnlySpan<float> test)
    {
        if (reference.Length != test.Length) throw new ArgumentException($"lengths differ: {reference.Length} vs {test.Length}");
        for (int i = 0; i < reference.Length; i++)
        {
            double r = reference[i], t = test[i];
            if (!double.IsFinite(r) || !double.IsFinite(t))
            {
                if (!(double.IsNaN(r) && double.IsNaN(t)) && r != t) NonFinite++;
                if (double.IsNaN(t) || (double.IsInfinity(t) && t != r)) TestNonFinite++;
                continue;
            }
            double d = r - t;
            if (r < ReferenceMin) ReferenceMin = r;
            if (r > ReferenceMax) ReferenceMax = r;
            _signal += r * r;
            _noise += d * d;
            _dot += r * t;
            _refNorm += r * r;
            _testNorm += t * t;
            double ad = Math.Abs(d);
            if (ad > MaxAbsError) MaxAbsError = ad;
        }
        _count += reference.Length;
    }

    /// <summary>Signal-to-quantization-noise ratio in dB: 10·log10(Σr² / Σ(r−t)²); +∞ when identical.</summary>
    public double SqnrDb => NonFinite > 0 ? double.NegativeInfinity : _noise == 0 ? double.PositiveInfinity
        : 10 * Math.Log10(_signal / _noise);

    /// <summary>Cosine similarity of the flattened tensors (1 when identical; NaN when a NaN/∞ on one side only leaves it
    /// undefined).</summary>
    public double Cosine => NonFinite > 0 ? double.NaN : _refNorm == 0 && _testNorm == 0 ? 1 : _dot / Math.Sqrt(_refNorm * _testNorm);

    /// <summary>Root-mean-square error.</summary>
    public double Rmse => _count == 0 ? 0 : Math.Sqrt(_noise / _count);
}

/// <summary>Next-token metrics over logits [.., seq, vocab]: top-1 agreement and perplexity.</summary>
public sealed class LogitsAccumulator
{
    private long _agree, _positions;
    private double _nllRef, _nllTest;
    private long _scored;

    /// <summary>
    /// Folds in logits of one sequence ([seq, vocab] row-major). When <paramref name="tokens"/> is
    /// given, position i's logits are scored against token i+1 for perplexity.
    /// </summary>
    public void Add(ReadOnlySpan<float> reference, ReadOnlySpan<float> test, int vocab, ReadOnlySpan<long> tokens = default)
    {
        int seq = reference.Length / vocab;
        for (int i = 0; i < seq; i++)
        {
            var r = reference.Slice(i * vocab, vocab);
            var t = test.Slice(i * vocab, vocab);
            if (ArgMax(r) == ArgMax(t)) _agree++;
            _positions++;
            if (!tokens.IsEmpty && i + 1 < tokens.Length)
            {
                long next = tokens[i + 1];
                if (next < 0 || next >= vocab)
                    throw new Quantc.Onnx.BadInputException($"token id {next} is outside the logits' vocabulary of {vocab}");
                _nllRef += LogSumExp(r) - r[(int)next];
                _nllTest += LogSumExp(t) - t[(int)next];
                _scored++;
            }
        }
    }

    /// <summary>Share of positions where both models predict the same next token.</summary>
    public double Top1Agreement => _positions == 0 ? 1 : (double)_agree / _positions;

    /// <summary>Perplexity of the reference model (NaN without tokens).</summary>
    public double ReferencePerplexity => _scored == 0 ? double.NaN : Math.Exp(_nllRef / _scored);

    /// <summary>Perplexity of the tested model (NaN without tokens).</summary>
    public double TestPerplexity => _scored == 0 ? double.NaN : Math.Exp(_nllTest / _scored);

    /// <summary>Positions scored for perplexity.</summary>
    public long ScoredTokens => _scored;

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static double LogSumExp(ReadOnlySpan<float> x)
    {
        float m = float.NegativeInfinity;
        foreach (float v in x) if (v > m) m = v;
        double s = 0;
        foreach (float v in x) s += Math.Exp(v - m);
        return m + Math.Log(s);
    }
}
