using System.Runtime.Intrinsics;
using System.Numerics.Tensors;

namespace Quantc.Core.Calibration;

/// <summary>One token whose activation magnitude stood out: where it was seen and how large it was.</summary>
public readonly record struct TokenSpike(int Sample, long Token, float AbsMax);

/// <summary>
/// Streaming statistics of one activation tensor over calibration batches: per tensor min / max /
/// absmax and a histogram; per channel (last axis) min / max / absmax / mean; per token (every
/// position of the other axes) absmax, summarised as a log-scale histogram (for the median) and the
/// largest tokens. Memory is O(channels + bins), independent of the number of samples.
/// </summary>
public sealed class TensorStats
{
    /// <summary>How many of the largest tokens are kept.</summary>
    public const int TopTokens = 16;

    private float[] _chMin = [], _chMax = [];
    private double[] _chSum = [];
    private float[] _chSumBlock = [];   // float partial sums over at most BlockRows rows, flushed into _chSum
    private int _blockRows;
    private const int BlockRows = 256;
    private readonly List<TokenSpike> _top = [];
    // Token absmax histogram: bins of 1/8 octave from 2^-40 to 2^40.
    private readonly long[] _tokenLog = new long[641];

    public TensorStats(string name, int bins = 2048)
    {
        Name = name;
        Histogram = new Histogram(bins);
    }

    public string Name { get; }
    public float Min { get; private set; } = float.PositiveInfinity;
    public float Max { get; private set; } = float.NegativeInfinity;
    public float AbsMax => Math.Max(Math.Abs(Min), Math.Abs(Max));
    public Histogram Histogram { get; }
    /// <summary>Channels (size of the last axis); 0 before the first batch.</summary>
    public int Channels => _chMin.Length;
    /// <summary>Tokens seen (product of all axes but the last, over all batches).</summary>
    public long Tokens { get; private set; }
    /// <summary>Batches folded in.</summary>
    public int Samples { get; private set; }
    public ReadOnlySpan<float> ChannelMin => _chMin;
    public ReadOnlySpan<float> ChannelMax => _chMax;
    /// <summary>Per-channel absolute maximum (from the per-channel min and max).</summary>
    public ReadOnlySpan<float> ChannelAbsMax => _chMin.Zip(_chMax, (lo, hi) => Math.Max(Math.Abs(lo), Math.Abs(hi))).ToArray();
    /// <summary>Per-channel mean.</summary>
    public float[] ChannelMean
    {
        get
        {
            Flush();
            return _chSum.Select(s => Tokens == 0 ? 0f : (float)(s / Tokens)).ToArray();
        }
    }

    private void Flush()
    {
        if (_blockRows == 0) return;
        for (int c = 0; c < _chSum.Length; c++) _chSum[c] += _chSumBlock[c];
        Array.Clear(_chSumBlock);
        _blockRows = 0;
    }
    /// <summary>The largest token absmax values seen, largest first.</summary>
    public IReadOnlyList<TokenSpike> LargestTokens => _top;

    /// <summary>Folds one batch in. <paramref name="data"/> is row-major with <paramref name="channels"/> as the last axis.</summary>
    public void Add(ReadOnlySpan<float> data, int channels, int sample = -1)
    {
        if (channels <= 0 || data.Length % channels != 0)
            throw new ArgumentException($"{Name}: {data.Length} values do not split into rows of {channels} channels");
        if (Channels == 0)
        {
            _chMin = Enumerable.Repeat(float.PositiveInfinity, channels).ToArray();
            _chMax = Enumerable.Repeat(float.NegativeInfinity, channels).ToArray();
            _chSum = new double[channels];
            _chSumBlock = new float[channels];
        }
        else if (Channels != channels)
            throw new ArgumentException($"{Name}: {channels} channels, earlier batches had {Channels}");

        if (data.Length == 0) return;
        if (float.IsNaN(TensorPrimitives.Sum(data)) && ContainsNaN(data))
            throw new ArgumentException($"{Name}: the activations contain NaN (the float model itself produces NaN on this data)");
        // One fused pass per row: channel min / max / sum and the row's absmax; then one binning pass.
        int rows = data.Length / channels;
        float absmax = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = data.Slice(r * channels, channels);
            float tokenAbs = FusedRow(row, _chMin, _chMax, _chSumBlock);
            if (++_blockRows == BlockRows) Flush();
            absmax = MathF.Max(absmax, tokenAbs);
            AddToken(new TokenSpike(sample < 0 ? Samples : sample, Tokens, tokenAbs));
            Tokens++;
        }
        Min = TensorPrimitives.Min(_chMin);
        Max = TensorPrimitives.Max(_chMax);
        Histogram.AddFinite(data, absmax);
        Samples++;
    }

    private static bool ContainsNaN(ReadOnlySpan<float> data)
    {
        foreach (float v in data) if (float.IsNaN(v)) return true;
        return false;
    }

    /// <summary>mn = min(mn, row), mx = max(mx, row), sum += row, element-wise; returns max |row|.</summary>
    private static float FusedRow(ReadOnlySpan<float> row, Span<float> mn, Span<float> mx, Span<float> sum)
    {
        int n = row.Length, i = 0;
        float abs = 0;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            ref float pr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(row);
            ref float pn = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(mn);
            ref float px = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(mx);
            ref float ps = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(sum);
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                nuint o = (nuint)i;
                var v = Vector256.LoadUnsafe(ref pr, o);
                Vector256.Min(Vector256.LoadUnsafe(ref pn, o), v).StoreUnsafe(ref pn, o);
                Vector256.Max(Vector256.LoadUnsafe(ref px, o), v).StoreUnsafe(ref px, o);
                (Vector256.LoadUnsafe(ref ps, o) + v).StoreUnsafe(ref ps, o);
                acc = Vector256.Max(acc, Vector256.Abs(v));
            }
            for (int l = 0; l < 8; l++) abs = MathF.Max(abs, acc[l]);
        }
        for (; i < n; i++)
        {
            float v = row[i];
            if (v < mn[i]) mn[i] = v;
            if (v > mx[i]) mx[i] = v;
            sum[i] += v;
            abs = MathF.Max(abs, MathF.Abs(v));
        }
        return abs;
    }

    private void AddToken(TokenSpike t)
    {
        int bin = t.AbsMax <= 0 ? 0 : Math.Clamp((int)Math.Round(MathF.Log2(t.AbsMax) * 8) + 320, 0, _tokenLog.Length - 1);
        _tokenLog[bin]++;
        if (_top.Count < TopTokens || t.AbsMax > _top[^1].AbsMax)
        {
            int i = 0;
            while (i < _top.Count && _top[i].AbsMax >= t.AbsMax) i++;
            _top.Insert(i, t);
            if (_top.Count > TopTokens) _top.RemoveAt(_top.Count - 1);
        }
    }

    /// <summary>Median of the per-token absmax (to within 1/8 octave).</summary>
    public float MedianTokenAbsMax
    {
        get
        {
            long half = (Tokens + 1) / 2, acc = 0;
            for (int i = 0; i < _tokenLog.Length; i++)
            {
                acc += _tokenLog[i];
                if (acc >= half) return i == 0 ? 0 : MathF.Pow(2, (i - 320) / 8f);
            }
            return 0;
        }
    }

    /// <summary>Largest token absmax over the median token absmax: how strongly a few tokens spike.</summary>
    public float SpikeRatio => MedianTokenAbsMax > 0 && _top.Count > 0 ? _top[0].AbsMax / MedianTokenAbsMax : 0;

    /// <summary>Largest channel absmax over the median channel absmax: how strongly a few channels stand out.</summary>
    public float ChannelOutlierRatio
    {
        get
        {
            if (Channels == 0) return 0;
            var sorted = ChannelAbsMax.ToArray().Order().ToArray();
            float median = sorted[sorted.Length / 2];
            return median > 0 ? sorted[^1] / median : 0;
        }
    }

    internal (long[] TokenLog, List<TokenSpike> Top, double[] Sum) State
    {
        get
        {
            Flush();
            return (_tokenLog, _top, _chSum);
        }
    }

    internal void Restore(float min, float max, float[] chMin, float[] chMax, double[] chSum, long tokens, int samples, long[] tokenLog,
        IEnumerable<TokenSpike> top)
    {
        Min = min; Max = max; _chMin = chMin; _chMax = chMax; _chSum = chSum; _chSumBlock = new float[chSum.Length]; _blockRows = 0;
        Tokens = tokens; Samples = samples;
        tokenLog.CopyTo(_tokenLog, 0);
        _top.Clear();
        _top.AddRange(top);
    }
}
