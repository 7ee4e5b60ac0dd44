namespace Quantc.Core.Calibration;

/// <summary>
/// A streaming histogram over a symmetric range [-R, R] with a fixed number of bins. When a value
/// falls outside the range, R doubles and adjacent bins merge pairwise, so the histogram stays
/// exact with respect to its bins and its memory never grows with the number of samples.
/// </summary>
public sealed class Histogram
{
    private long[] _bins;

    /// <summary>A histogram with <paramref name="bins"/> bins (even, ≥ 2048 recommended).</summary>
    public Histogram(int bins = 2048)
    {
        if (bins < 4 || bins % 4 != 0) throw new ArgumentOutOfRangeException(nameof(bins), "bins must be a positive multiple of 4");
        _bins = new long[bins];
    }

    /// <summary>Builds a histogram from saved state.</summary>
    public Histogram(long[] bins, float range)
    {
        _bins = bins;
        Range = range;
    }

    /// <summary>Half-width of the covered range; 0 until the first nonzero value.</summary>
    public float Range { get; private set; }

    /// <summary>Bin counts, from -Range to +Range.</summary>
    public ReadOnlySpan<long> Bins => _bins;

    /// <summary>Number of values added.</summary>
    public long Count { get; private set; }

    /// <summary>Width of one bin.</summary>
    public double BinWidth => 2.0 * Range / _bins.Length;

    private float[] _scratch = [];
    private const int ScratchFloats = 4096;
    private int[] _lanes = [];

    private static int Clamp(int b, int n) => b >= n ? n - 1 : b < 0 ? 0 : b;

    /// <summary>Adds values (NaN is ignored).</summary>
    public void Add(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) return;
        float absmax = MathF.Abs(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(values));
        bool hasNaN = float.IsNaN(absmax) || float.IsNaN(System.Numerics.Tensors.TensorPrimitives.Sum(values));
        if (hasNaN)
        {
            // Rare: drop NaNs, then take the fast path.
            var clean = new float[values.Length];
            int c = 0;
            foreach (float v in values) if (!float.IsNaN(v)) clean[c++] = v;
            Add(clean.AsSpan(0, c));
            return;
        }
        AddFinite(values, absmax);
    }

    /// <summary>Adds values known to be finite, whose largest magnitude is <paramref name="absmax"/>.</summary>
    public void AddFinite(ReadOnlySpan<float> values, float absmax)
    {
        if (values.IsEmpty) return;
        if (absmax > Range) Grow(absmax);
        if (Range == 0)
        {
            // All zeros so far: they belong to the bin of +0.
            _bins[_bins.Length / 2] += values.Length;
            Count += values.Length;
            return;
        }
        int n = _bins.Length;
        float scale = n / (2f * Range);
        // Four interleaved count arrays break the store-to-load chains on popular bins.
        if (_lanes.Length != 4 * n) _lanes = new int[4 * n];
        var lanes = _lanes.AsSpan();
        // In chunks of ScratchFloats: a histogram kept for every calibrated tensor must not keep a sample-sized buffer (the 1b
        // model's ranges pass grew by 6 MiB of them per decoder block).
        if (_scratch.Length == 0) _scratch = new float[ScratchFloats];
        for (int start = 0; start < values.Length; start += ScratchFloats)
        {
            var chunk = values.Slice(start, Math.Min(ScratchFloats, values.Length - start));
            var idx = _scratch.AsSpan(0, chunk.Length);
            // bin = floor((v + R) · n / 2R), computed vectorised; then counted.
            System.Numerics.Tensors.TensorPrimitives.Add(chunk, Range, idx);
            System.Numerics.Tensors.TensorPrimitives.Multiply(idx, scale, idx);
            int i = 0;
            for (; i + 4 <= idx.Length; i += 4)
            {
                lanes[Clamp((int)idx[i], n)]++;
                lanes[n + Clamp((int)idx[i + 1], n)]++;
                lanes[2 * n + Clamp((int)idx[i + 2], n)]++;
                lanes[3 * n + Clamp((int)idx[i + 3], n)]++;
            }
            for (; i < idx.Length; i++) lanes[Clamp((int)idx[i], n)]++;
        }
        for (int b = 0; b < n; b++)
        {
            _bins[b] += lanes[b] + lanes[n + b] + lanes[2 * n + b] + lanes[3 * n + b];
        }
        lanes.Clear();
        Count += values.Length;
    }

    private void Grow(float absmax)
    {
        if (float.IsInfinity(absmax)) throw new ArgumentException("values must be finite");
        if (Range == 0)
        {
            // Start at the next power of two above absmax; zeros seen so far stay in the middle bin.
            Range = MathF.Pow(2, MathF.Ceiling(MathF.Log2(absmax)));
            if (Range < absmax) Range *= 2;
            return;
        }
        int n = _bins.Length;
        while (Range < absmax)
        {
            // New range 2R: the old bins cover the middle half; pairs of old bins merge into one.
            var merged = new long[n];
            for (int i = 0; i < n; i++) merged[n / 4 + i / 2] += _bins[i];
            _bins = merged;
            Range *= 2;
        }
    }

    /// <summary>The value below which a fraction <paramref name="q"/> of the values lie (linear within a bin).</summary>
    public float Quantile(double q)
    {
        if (Count == 0) return 0;
        q = Math.Clamp(q, 0, 1);
        double target = q * Count;
        long acc = 0;
        for (int i = 0; i < _bins.Length; i++)
        {
            if (acc + _bins[i] >= target && _bins[i] > 0)
            {
                double frac = (target - acc) / _bins[i];
                return (float)(-Range + (i + frac) * BinWidth);
            }
            acc += _bins[i];
        }
        return Range;
    }

    /// <summary>The histogram of |x|: <see cref="Bins"/>.Length/2 bins over [0, Range].</summary>
    public long[] AbsoluteBins()
    {
        int half = _bins.Length / 2;
        var abs = new long[half];
        for (int i = 0; i < half; i++) abs[i] = _bins[half + i] + _bins[half - 1 - i];
        return abs;
    }

    /// <summary>Adds another histogram's counts (ranges are aligned by growing the smaller one).</summary>
    public void Merge(Histogram other)
    {
        if (other._bins.Length != _bins.Length) throw new ArgumentException("bin counts differ");
        if (other.Count == 0) return;
        var o = other;
        if (o.Range > Range) Grow(o.Range);
        if (o.Range < Range && o.Range > 0)
        {
            o = new Histogram((long[])other._bins.Clone(), other.Range) { Count = other.Count };
            o.Grow(Range);
        }
        for (int i = 0; i < _bins.Length; i++) _bins[i] += o._bins[i];
        Count += other.Count;
    }

    internal void SetCount(long count) => Count = count;
}
