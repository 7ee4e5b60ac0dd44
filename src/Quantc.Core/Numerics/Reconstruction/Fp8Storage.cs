using System.Numerics.Tensors;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Fast float8 e4m3fn coding for storage (COAT's FP8 caches): round to nearest even with saturation, bit-identical to
/// <see cref="Float8.ToE4M3Fn"/> for every finite float; decoding through a 256-entry table.
/// </summary>
public static class E4M3
{
    /// <summary>The largest finite value, 448.</summary>
    public const float Max = 448f;

    /// <summary>The smallest normal value, 2⁻⁶: below it the grid is subnormal (spacing 2⁻⁹), with fewer significant
    /// bits.</summary>
    public const float MinNormal = 1f / 64;

    private static readonly float[] Table = BuildTable();

    private static float[] BuildTable()
    {
        var t = new float[256];
        for (int i = 0; i < 256; i++) t[i] = Quantc.Ir.NumericConvert.Float8E4M3FnToFloat((byte)i);
        return t;
    }

    /// <summary>Encodes a finite float (NaN is not expected in caches and becomes 0).</summary>
    public static byte Encode(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        byte sign = (byte)((bits >> 24) & 0x80);
        float a = MathF.Abs(x);
        if (!(a > 0)) return sign;                           // zero (and NaN)
        if (a > Max) return (byte)(sign | 0x7E);             // saturate (RNE would give 480, which e4m3fn does not have)
        if (a < MinNormal)
        {
            // Subnormal: multiples of 2⁻⁹; 8 · 2⁻⁹ is the smallest normal, whose code is 0x08 as well.
            return (byte)(sign | (int)MathF.Round(a * 512f, MidpointRounding.ToEven));
        }
        uint u = BitConverter.SingleToUInt32Bits(a);
        u += 0x7FFFFu + ((u >> 20) & 1u);                    // round the 23-bit mantissa to 3 bits, half to even
        int e = (int)(u >> 23) - 127 + 7;
        int m = (int)((u >> 20) & 7u);
        return (byte)(sign | (e << 3) | m);
    }

    /// <summary>Decodes one code.</summary>
    public static float Decode(byte code) => Table[code];

    /// <summary>dst[i] = Encode(src[i] · inverseScale).</summary>
    public static void Encode(ReadOnlySpan<float> src, Span<byte> dst, float inverseScale)
    {
        for (int i = 0; i < src.Length; i++) dst[i] = Encode(src[i] * inverseScale);
    }

    /// <summary>dst[i] = Decode(src[i]) · scale.</summary>
    public static void Decode(ReadOnlySpan<byte> src, Span<float> dst, float scale)
    {
        var t = Table;
        for (int i = 0; i < src.Length; i++) dst[i] = t[src[i]] * scale;
    }
}

/// <summary>
/// A matrix stored as float32, or as float8 e4m3 with one scale for the whole tensor (COAT's granularity for a linear layer's
/// input) or one per group of <c>G</c> consecutive values of a row (1×G, COAT's granularity for the other activations).
/// </summary>
public sealed class StoredMatrix
{
    private readonly float[]? _f32;
    private readonly byte[]? _codes;
    private readonly float[]? _scales;

    /// <summary>Rows and columns.</summary>
    public int Rows { get; }
    public int Columns { get; }

    /// <summary>0 for float32, -1 for one scale per tensor, G for 1×G groups.</summary>
    public int Granularity { get; }

    private StoredMatrix(int rows, int columns, int granularity, float[]? f32, byte[]? codes, float[]? scales)
    {
        Rows = rows;
        Columns = columns;
        Granularity = granularity;
        _f32 = f32;
        _codes = codes;
        _scales = scales;
    }

    /// <summary>Bytes held (values and scales).</summary>
    public long Bytes => _f32 is not null ? 4L * _f32.Length : _codes!.Length + 4L * _scales!.Length;

    /// <summary>Stores <paramref name="data"/> ([rows, columns]) as float32.</summary>
    public static StoredMatrix Float32(ReadOnlySpan<float> data, int columns) =>
        new(data.Length / columns, columns, 0, data.ToArray(), null, null);

    /// <summary>Stores as float8 e4m3 with one per-tensor scale absmax / 448.</summary>
    public static StoredMatrix PerTensor(ReadOnlySpan<float> data, int columns)
    {
        float amax = data.IsEmpty ? 0 : MathF.Abs(TensorPrimitives.MaxMagnitude(data));
        float scale = amax > 0 && float.IsFinite(amax) ? amax / E4M3.Max : 1f;
        var codes = new byte[data.Length];
        E4M3.Encode(data, codes, 1f / scale);
        return new StoredMatrix(data.Length / columns, columns, -1, null, codes, [scale]);
    }

    /// <summary>Stores as float8 e4m3 with one scale per 1×<paramref name="group"/> slice of each row (the last one of a row may be
    /// shorter).</summary>
    public static StoredMatrix PerGroup(ReadOnlySpan<float> data, int columns, int group)
    {
        if (group <= 0) throw new ArgumentException("group must be positive");
        int rows = data.Length / columns, per = (columns + group - 1) / group;
        var codes = new byte[data.Length];
        var scales = new float[rows * per];
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < per; g++)
            {
                int start = r * columns + g * group, len = Math.Min(group, columns - g * group);
                var slice = data.Slice(start, len);
                float amax = MathF.Abs(TensorPrimitives.MaxMagnitude(slice));
                float scale = amax > 0 && float.IsFinite(amax) ? amax / E4M3.Max : 1f;
                scales[r * per + g] = scale;
                E4M3.Encode(slice, codes.AsSpan(start, len), 1f / scale);
            }
        return new StoredMatrix(rows, columns, group, null, codes, scales);
    }

    /// <summary>Rows [<paramref name="row"/>, row + count) decoded into <paramref name="dst"/> (count · columns values).</summary>
    public void Read(int row, int count, Span<float> dst)
    {
        int start = row * Columns, len = count * Columns;
        if (_f32 is not null) { _f32.AsSpan(start, len).CopyTo(dst); return; }
        if (Granularity < 0) { E4M3.Decode(_codes.AsSpan(start, len), dst, _scales![0]); return; }
        int per = (Columns + Granularity - 1) / Granularity;
        for (int r = row; r < row + count; r++)
            for (int g = 0; g < per; g++)
            {
                int off = g * Granularity, l = Math.Min(Granularity, Columns - off);
                E4M3.Decode(_codes.AsSpan(r * Columns + off, l), dst.Slice((r - row) * Columns + off, l), _scales![r * per + g]);
            }
    }
}

/// <summary>
/// A vector stored in float8 e4m3 groups with COAT's dynamic range expansion (optimizer states): per group of <c>G</c> values,
/// f(x) = sign(x)·|x / max|^k with k = ln(R_e4m3) / ln(max / min) (min: the smallest non-zero magnitude), so that the group's
/// magnitudes span e4m3's normal range [2⁻⁶, 448] after scaling by 448; read back as max · |code / 448|^(1/k). k = 1 (plain
/// per-group scaling) when <c>expand</c> is off. Zeros stay exact.
/// </summary>
public sealed class ExpandedFp8Vector
{
    /// <summary>The range of e4m3's normal numbers, 448 / 2⁻⁶.</summary>
    public const double NormalRange = E4M3.Max / E4M3.MinNormal;

    private readonly byte[] _codes;
    private readonly float[] _max;
    private readonly float[] _k;
    private readonly bool _expand;

    /// <summary>Values per group.</summary>
    public int Group { get; }

    /// <summary>Length.</summary>
    public int Length => _codes.Length;

    /// <summary>Bytes held (codes, per-group max and exponent).</summary>
    public long Bytes => _codes.Length + 4L * (_max.Length + _k.Length);

    /// <summary>A zero vector of <paramref name="length"/> values.</summary>
    public ExpandedFp8Vector(int length, int group = 128, bool expand = true)
    {
        if (group <= 0) throw new ArgumentException("group must be positive");
        if (length < 0) throw new ArgumentException("negative length");
        Group = group;
        _expand = expand;
        _codes = new byte[length];
        int groups = (length + group - 1) / group;
        _max = new float[groups];
        _k = new float[groups];
        Array.Fill(_k, 1f);
    }

    /// <summary>Groups.</summary>
    public int Groups => _max.Length;

    /// <summary>Stores <paramref name="src"/> (Length values).</summary>
    public void Write(ReadOnlySpan<float> src)
    {
        for (int g = 0; g < Groups; g++) WriteGroup(g, src.Slice(g * Group, Math.Min(Group, Length - g * Group)));
    }

    /// <summary>Reads the stored values into <paramref name="dst"/> (Length values).</summary>
    public void Read(Span<float> dst)
    {
        for (int g = 0; g < Groups; g++) ReadGroup(g, dst.Slice(g * Group, Math.Min(Group, Length - g * Group)));
    }

    /// <summary>Stores group <paramref name="g"/> from <paramref name="slice"/> (its length: Group, or less for the last).</summary>
    public void WriteGroup(int g, ReadOnlySpan<float> slice)
    {
        int start = g * Group, len = slice.Length;
        var codes = _codes.AsSpan(start, len);
        Span<float> t = len <= 1024 ? stackalloc float[len] : new float[len];
        TensorPrimitives.Abs(slice, t);
        float max = TensorPrimitives.Max(t);
        _max[g] = max;
        if (!(max > 0) || !float.IsFinite(max)) { codes.Clear(); _k[g] = 1; _max[g] = 0; return; }
        float min = float.MaxValue;
        foreach (float v in t) if (v > 0 && v < min) min = v;
        double range = max / (double)min;
        float k = _expand && range > 1.0001 ? (float)Math.Clamp(Math.Log(NormalRange) / Math.Log(range), 1.0 / 16, 64) : 1f;
        _k[g] = k;
        TensorPrimitives.Multiply(t, 1f / max, t);                 // (0, 1]
        if (k != 1f)
        {
            // |y|^k = exp(k·ln|y|); zeros are restored below.
            TensorPrimitives.Log(t, t);
            TensorPrimitives.Multiply(t, k, t);
            TensorPrimitives.Exp(t, t);
        }
        for (int i = 0; i < len; i++)
            codes[i] = slice[i] == 0 ? (byte)0 : E4M3.Encode(MathF.CopySign(t[i] * E4M3.Max, slice[i]));
    }

    /// <summary>Reads group <paramref name="g"/> into <paramref name="dst"/>.</summary>
    public void ReadGroup(int g, Span<float> dst)
    {
        int start = g * Group, len = dst.Length;
        var codes = _codes.AsSpan(start, len);
        float max = _max[g], k = _k[g];
        if (max == 0) { dst.Clear(); return; }
        for (int i = 0; i < len; i++) dst[i] = MathF.Abs(E4M3.Decode(codes[i])) * (1f / E4M3.Max);
        if (k != 1f)
        {
            TensorPrimitives.Log(dst, dst);
            TensorPrimitives.Multiply(dst, 1f / k, dst);
            TensorPrimitives.Exp(dst, dst);
        }
        for (int i = 0; i < len; i++) dst[i] = (codes[i] & 0x7F) == 0 ? 0f : ((codes[i] & 0x80) != 0 ? -dst[i] : dst[i]) * max;
    }
}
