using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

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
        int i = 0;
        if (Vectorized)
        {
            var inv = Vector256.Create(inverseScale);
            for (; i + 32 <= src.Length; i += 32)
            {
                var c0 = Encode(Vector256.Create(src.Slice(i, 8)) * inv);
                var c1 = Encode(Vector256.Create(src.Slice(i + 8, 8)) * inv);
                var c2 = Encode(Vector256.Create(src.Slice(i + 16, 8)) * inv);
                var c3 = Encode(Vector256.Create(src.Slice(i + 24, 8)) * inv);
                Pack(c0, c1, c2, c3, dst.Slice(i, 32));
            }
        }
        for (; i < src.Length; i++) dst[i] = Encode(src[i] * inverseScale);
    }

    /// <summary>dst[i] = Decode(src[i]) · scale.</summary>
    public static void Decode(ReadOnlySpan<byte> src, Span<float> dst, float scale)
    {
        var t = Table;
        int i = 0;
        if (Vectorized)
        {
            var s = Vector256.Create(scale);
            for (; i + 8 <= src.Length; i += 8) (Decode(Widen(src, i)) * s).CopyTo(dst.Slice(i, 8));
        }
        for (; i < src.Length; i++) dst[i] = t[src[i]] * scale;
    }

    /// <summary>Whether the 8-lane codec below runs here (AVX2); otherwise the scalar loops, which give the same bits.</summary>
    internal static bool Vectorized => Avx2.IsSupported;

    /// <summary><see cref="Encode(float)"/> on 8 lanes, bit for bit (codes in the low byte of each lane).</summary>
    internal static Vector256<uint> Encode(Vector256<float> x)
    {
        var bits = x.AsUInt32();
        var sign = (bits >> 24) & Vector256.Create(0x80u);
        var a = Vector256.Abs(x);
        var u = a.AsUInt32();
        // Normal: the mantissa rounded to 3 bits, half to even (a carry moves into the exponent), exponent rebiased 127 → 7.
        var r = u + Vector256.Create(0x7FFFFu) + ((u >> 20) & Vector256.Create(1u));
        var normal = (((r >> 23) - Vector256.Create(120u)) << 3) | ((r >> 20) & Vector256.Create(7u));
        // Subnormal: a · 512 < 8 rounded half to even by adding and removing 2²³ (exact below 2²²).
        var magic = Vector256.Create(8388608f);
        var sub = Vector256.ConvertToInt32((a * Vector256.Create(512f) + magic) - magic).AsUInt32();
        var code = Vector256.ConditionalSelect(Vector256.LessThan(a, Vector256.Create(MinNormal)).AsUInt32(), sub, normal);
        code = Vector256.ConditionalSelect(Vector256.GreaterThan(a, Vector256.Create(Max)).AsUInt32(), Vector256.Create(0x7Eu), code);
        code &= Vector256.GreaterThan(a, Vector256<float>.Zero).AsUInt32();   // zero and NaN: the sign alone
        return code | sign;
    }

    /// <summary><see cref="Decode(byte)"/> on 8 lanes (codes 0–255 in uint lanes), bit for bit with the table.</summary>
    internal static Vector256<float> Decode(Vector256<uint> codes)
    {
        var mag = codes & Vector256.Create(0x7Fu);
        var m = mag & Vector256.Create(7u);
        var normal = (((mag >> 3) + Vector256.Create(120u)) << 23 | (m << 20)).AsSingle();
        var sub = Vector256.ConvertToSingle(m.AsInt32()) * Vector256.Create(1f / 512);   // m · 2⁻⁹, exact
        var value = Vector256.ConditionalSelect(Vector256.LessThan(mag, Vector256.Create(8u)).AsSingle(), sub, normal);
        value = Vector256.ConditionalSelect(Vector256.Equals(mag, Vector256.Create(0x7Fu)).AsSingle(), Vector256.Create(float.NaN), value);
        return (value.AsUInt32() | ((codes & Vector256.Create(0x80u)) << 24)).AsSingle();
    }

    /// <summary>Codes [i, i + 8) widened to uint lanes (AVX2's vpmovzxbd).</summary>
    internal static Vector256<uint> Widen(ReadOnlySpan<byte> codes, int i) =>
        Avx2.ConvertToVector256Int32(Vector128.CreateScalar(MemoryMarshal.Read<ulong>(codes.Slice(i, 8))).AsByte()).AsUInt32();

    /// <summary>Four vectors of codes (low bytes) into 32 bytes, in order.</summary>
    internal static void Pack(Vector256<uint> c0, Vector256<uint> c1, Vector256<uint> c2, Vector256<uint> c3, Span<byte> dst) =>
        Vector256.Narrow(Vector256.Narrow(c0, c1), Vector256.Narrow(c2, c3)).CopyTo(dst);
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
    public void WriteGroup(int g, ReadOnlySpan<float> slice) => WriteGroup(g, slice, E4M3.Vectorized);

    /// <summary><see cref="WriteGroup(int, ReadOnlySpan{float})"/> by the AVX2 loops (<paramref name="vector"/>) or the scalar ones:
    /// the same codes either way.</summary>
    internal void WriteGroup(int g, ReadOnlySpan<float> slice, bool vector)
    {
        int start = g * Group, len = slice.Length;
        var codes = _codes.AsSpan(start, len);
        Span<float> t = len <= 1024 ? stackalloc float[len] : new float[len];
        TensorPrimitives.Abs(slice, t);
        float max = TensorPrimitives.Max(t);
        _max[g] = max;
        if (!(max > 0) || !float.IsFinite(max)) { codes.Clear(); _k[g] = 1; _max[g] = 0; return; }
        float min = MinPositive(t, vector);
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
        int i = 0;
        if (vector)
        {
            // codes = slice == 0 ? 0 : Encode(CopySign(t · 448, slice)), 8 lanes at a time.
            static Vector256<uint> Code(ReadOnlySpan<float> slice, ReadOnlySpan<float> t, int at)
            {
                var signBit = Vector256.Create(0x80000000u);
                var x = Vector256.Create(slice.Slice(at, 8));
                var y = ((Vector256.Create(t.Slice(at, 8)) * Vector256.Create(E4M3.Max)).AsUInt32() & ~signBit) | (x.AsUInt32() & signBit);
                return E4M3.Encode(y.AsSingle()) & ~Vector256.Equals(x, Vector256<float>.Zero).AsUInt32();
            }
            for (; i + 32 <= len; i += 32)
                E4M3.Pack(Code(slice, t, i), Code(slice, t, i + 8), Code(slice, t, i + 16), Code(slice, t, i + 24), codes.Slice(i, 32));
        }
        for (; i < len; i++)
            codes[i] = slice[i] == 0 ? (byte)0 : E4M3.Encode(MathF.CopySign(t[i] * E4M3.Max, slice[i]));
    }

    // The smallest positive value of t (float.MaxValue when none).
    private static float MinPositive(ReadOnlySpan<float> t, bool vector)
    {
        float min = float.MaxValue;
        int i = 0;
        if (vector && t.Length >= 8)
        {
            var big = Vector256.Create(float.MaxValue);
            var vmin = big;
            for (; i + 8 <= t.Length; i += 8)
            {
                var v = Vector256.Create(t.Slice(i, 8));
                vmin = Vector256.Min(vmin, Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256<float>.Zero), v, big));
            }
            for (int l = 0; l < 8; l++) min = Math.Min(min, vmin[l]);
        }
        for (; i < t.Length; i++) if (t[i] > 0 && t[i] < min) min = t[i];
        return min;
    }

    // ln(|e4m3 code c| / 448) for c = 0 … 127, by TensorPrimitives.Log over whole vectors (as ReadGroup's Log runs on a group of
    // at least one vector): the values ReadGroup would compute, looked up.
    private static readonly float[] LnMagnitude = BuildLnMagnitude();

    private static float[] BuildLnMagnitude()
    {
        var t = new float[128];
        for (int c = 0; c < 128; c++) t[c] = MathF.Abs(E4M3.Decode((byte)c)) * (1f / E4M3.Max);
        TensorPrimitives.Log(t, t);
        return t;
    }

    // dst[i] = LnMagnitude[codes[i] & 0x7F], 8 lanes per AVX2 gather.
    private static unsafe void GatherLn(ReadOnlySpan<byte> codes, Span<float> dst)
    {
        int i = 0;
        fixed (float* table = LnMagnitude)
        {
            var low7 = Vector256.Create(0x7F);
            for (; i + 8 <= codes.Length; i += 8)
                Avx2.GatherVector256(table, E4M3.Widen(codes, i).AsInt32() & low7, 4).CopyTo(dst.Slice(i, 8));
        }
        for (; i < codes.Length; i++) dst[i] = LnMagnitude[codes[i] & 0x7F];
    }

    /// <summary>Reads group <paramref name="g"/> into <paramref name="dst"/>.</summary>
    public void ReadGroup(int g, Span<float> dst) => ReadGroup(g, dst, E4M3.Vectorized);

    /// <summary><see cref="ReadGroup(int, Span{float})"/> by the AVX2 loops (<paramref name="vector"/>) or the scalar ones: the same
    /// values either way.</summary>
    internal void ReadGroup(int g, Span<float> dst, bool vector)
    {
        int start = g * Group, len = dst.Length;
        var codes = _codes.AsSpan(start, len);
        float max = _max[g], k = _k[g];
        if (max == 0) { dst.Clear(); return; }
        int i = 0;
        if (vector && k != 1f && len >= Vector256<float>.Count)
        {
            // ln(|code| / 448) from the table (the same Log on the same 128 inputs), then · 1/k and exp.
            GatherLn(codes, dst);
            TensorPrimitives.Multiply(dst, 1f / k, dst);
            TensorPrimitives.Exp(dst, dst);
        }
        else
        {
            var inv448 = Vector256.Create(1f / E4M3.Max);
            var magnitude = Vector256.Create(0x7FFFFFFFu);
            if (vector)
                for (; i + 8 <= len; i += 8)
                    ((E4M3.Decode(E4M3.Widen(codes, i)).AsUInt32() & magnitude).AsSingle() * inv448).CopyTo(dst.Slice(i, 8));
            for (; i < len; i++) dst[i] = MathF.Abs(E4M3.Decode(codes[i])) * (1f / E4M3.Max);
            if (k != 1f)
            {
                TensorPrimitives.Log(dst, dst);
                TensorPrimitives.Multiply(dst, 1f / k, dst);
                TensorPrimitives.Exp(dst, dst);
            }
        }
        i = 0;
        if (vector)
        {
            var vmax = Vector256.Create(max);
            for (; i + 8 <= len; i += 8)
            {
                var c = E4M3.Widen(codes, i);
                var signed = (Vector256.Create(dst.Slice(i, 8)).AsUInt32() ^ ((c & Vector256.Create(0x80u)) << 24)).AsSingle() * vmax;
                var zero = Vector256.Equals(c & Vector256.Create(0x7Fu), Vector256<uint>.Zero).AsSingle();
                Vector256.ConditionalSelect(zero, Vector256<float>.Zero, signed).CopyTo(dst.Slice(i, 8));
            }
        }
        for (; i < len; i++) dst[i] = (codes[i] & 0x7F) == 0 ? 0f : ((codes[i] & 0x80) != 0 ? -dst[i] : dst[i]) * max;
    }
}
