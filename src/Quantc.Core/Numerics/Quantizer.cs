using System.Runtime.CompilerServices;

namespace Quantc.Core.Numerics;

/// <summary>
/// Quantization exactly as ONNX QuantizeLinear defines it (opset 21): y = saturate(round(x / scale)
/// + zero_point) with round-half-to-even for integer formats; for float8, x / scale converted to the
/// format with round-to-nearest-even and saturation (NaN stays NaN, ±∞ and overflow clamp to the
/// largest finite value). Scales may be per tensor, per channel (one per index of an axis) or per
/// block (block_size consecutive elements along the axis share one). Output is the raw bytes of the
/// quantized tensor (int4/uint4 packed two per byte, low nibble first).
/// </summary>
public static class Quantizer
{
    /// <summary>
    /// How scales map to elements. The tensor is viewed as [outer, axis, inner]: per tensor, one scale;
    /// per axis (<see cref="BlockSize"/> 0), one scale per index of the axis; blocked, one scale per
    /// (outer, block of <see cref="BlockSize"/> along the axis, inner) — the scale tensor then has x's
    /// shape with the axis divided by the block size, as QuantizeLinear's block_size defines.
    /// </summary>
    public readonly record struct Layout(long Outer, long AxisLength, long Inner, long BlockSize, bool IsPerTensor)
    {
        /// <summary>Per-tensor: one scale.</summary>
        public static Layout PerTensor(long count) => new(1, 1, count, 0, true);

        /// <summary>Scales per index of <paramref name="axis"/> (blockSize 0), or per block of that many elements along it.</summary>
        public static Layout Along(long[] shape, int axis, long blockSize = 0)
        {
            if (axis < 0) axis += shape.Length;
            if (axis < 0 || axis >= shape.Length) throw new ArgumentOutOfRangeException(nameof(axis));
            if (blockSize < 0) throw new ArgumentOutOfRangeException(nameof(blockSize));
            long outer = 1, inner = 1;
            for (int i = 0; i < axis; i++) outer *= shape[i];
            for (int i = axis + 1; i < shape.Length; i++) inner *= shape[i];
            return new Layout(outer, shape[axis], inner, blockSize, false);
        }

        /// <summary>Blocks along the axis.</summary>
        public long Blocks => BlockSize == 0 ? AxisLength : (AxisLength + BlockSize - 1) / BlockSize;

        /// <summary>Number of scales this layout needs.</summary>
        public long ScaleCount => IsPerTensor ? 1 : BlockSize == 0 ? AxisLength : Outer * Blocks * Inner;

        /// <summary>Index of the scale for element <paramref name="i"/> (flat, row-major).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public long ScaleIndex(long i)
        {
            if (IsPerTensor) return 0;
            long inner = i % Inner;
            long rest = i / Inner;
            long a = rest % AxisLength;
            if (BlockSize == 0) return a;
            long o = rest / AxisLength;
            return (o * Blocks + a / BlockSize) * Inner + inner;
        }
    }

    /// <summary>Quantizes <paramref name="x"/> with per-tensor <paramref name="scale"/> and <paramref name="zeroPoint"/>.</summary>
    public static byte[] Quantize(ReadOnlySpan<float> x, QuantFormat format, float scale, int zeroPoint = 0) =>
        Quantize(x, format, Layout.PerTensor(x.Length), [scale], zeroPoint == 0 ? null : [zeroPoint]);

    /// <summary>Quantizes <paramref name="x"/> with scales (and zero points) laid out by <paramref name="layout"/>.</summary>
    public static byte[] Quantize(ReadOnlySpan<float> x, QuantFormat format, Layout layout, ReadOnlySpan<float> scales,
        ReadOnlySpan<int> zeroPoints = default)
    {
        if (layout.IsPerTensor && !format.IsFloat && format.Bits == 8)
            return QuantizePerTensor8(x, format, scales[0], zeroPoints.IsEmpty ? 0 : zeroPoints[0]);
        var bytes = new byte[format.ByteSize(x.Length)];
        for (int i = 0; i < x.Length; i++)
        {
            long si = layout.ScaleIndex(i);
            float s = scales[(int)si];
            int zp = zeroPoints.IsEmpty ? 0 : zeroPoints[(int)si];
            if (format.IsFloat)
            {
                bytes[i] = format.DataType == QuantFormat.Float8E4M3Fn.DataType ? Float8.ToE4M3Fn(x[i] / s) : Float8.ToE5M2(x[i] / s);
                continue;
            }
            int q = QuantizeInt(x[i], s, zp, format);
            switch (format.Bits)
            {
                case 8: bytes[i] = (byte)q; break;
                case 4: Quantc.Ir.Nibbles.Put(bytes, i, q); break;
                case 16: bytes[2 * i] = (byte)q; bytes[2 * i + 1] = (byte)(q >> 8); break;
                default: throw new NotSupportedException($"{format.Name}");
            }
        }
        return bytes;
    }

    /// <summary>The vectorised path for per-tensor int8/uint8: divide, round half to even, add the zero point, saturate.</summary>
    private static byte[] QuantizePerTensor8(ReadOnlySpan<float> x, QuantFormat format, float scale, int zeroPoint)
    {
        var tmp = new float[x.Length];
        System.Numerics.Tensors.TensorPrimitives.Divide(x, scale, tmp);
        if (float.IsNaN(System.Numerics.Tensors.TensorPrimitives.Sum(tmp)))
            for (int i = 0; i < tmp.Length; i++) if (float.IsNaN(tmp[i])) tmp[i] = 0; // NaN quantizes like 0
        System.Numerics.Tensors.TensorPrimitives.Round(tmp, MidpointRounding.ToEven, tmp);
        if (zeroPoint != 0) System.Numerics.Tensors.TensorPrimitives.Add(tmp, zeroPoint, tmp);
        System.Numerics.Tensors.TensorPrimitives.Clamp(tmp, (float)format.Min, (float)format.Max, tmp);
        var ints = new int[x.Length];
        System.Numerics.Tensors.TensorPrimitives.ConvertTruncating<float, int>(tmp, ints);
        var bytes = new byte[x.Length];
        for (int i = 0; i < ints.Length; i++) bytes[i] = (byte)ints[i];
        return bytes;
    }

    /// <summary>One integer element: saturate(round_half_even(x / scale) + zero_point); NaN counts as 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int QuantizeInt(float x, float scale, int zeroPoint, QuantFormat format)
    {
        float v = x / scale;
        double r = float.IsNaN(v) ? 0 : Math.Round((double)v, MidpointRounding.ToEven) + zeroPoint;
        return (int)Math.Clamp(r, format.Min, format.Max);
    }

    /// <summary>Dequantizes raw bytes back to float32: (q − zero_point) · scale.</summary>
    public static float[] Dequantize(ReadOnlySpan<byte> q, long count, QuantFormat format, Layout layout, ReadOnlySpan<float> scales,
        ReadOnlySpan<int> zeroPoints = default)
    {
        var y = new float[count];
        for (int i = 0; i < count; i++)
        {
            long si = layout.ScaleIndex(i);
            float s = scales[(int)si];
            int zp = zeroPoints.IsEmpty ? 0 : zeroPoints[(int)si];
            float v = format.Name switch
            {
                "int8" => (sbyte)q[i],
                "uint8" => q[i],
                "int16" => (short)(q[2 * i] | (q[2 * i + 1] << 8)),
                "int4" => Quantc.Ir.Nibbles.GetSigned(q, i),
                "uint4" => Quantc.Ir.Nibbles.Get(q, i),
                "float8e4m3fn" => Quantc.Ir.NumericConvert.Float8E4M3FnToFloat(q[i]),
                "float8e5m2" => (float)BitConverter.UInt16BitsToHalf((ushort)(q[i] << 8)),
                _ => throw new NotSupportedException(format.Name),
            };
            y[i] = (v - zp) * s;
        }
        return y;
    }
}

/// <summary>float32 → float8 conversions with round-to-nearest-even and saturation (ONNX Cast/QuantizeLinear, saturate=1).</summary>
public static class Float8
{
    /// <summary>To float8 e4m3fn (bias 7, max 448, NaN 0x7F/0xFF, no infinities).</summary>
    public static byte ToE4M3Fn(float x) => Convert(x, expBits: 4, manBits: 3, bias: 7, maxBits: 0x7E, nan: 0x7F, infToMax: true);

    /// <summary>To float8 e5m2 (bias 15, max 57344, with infinities; saturation clamps overflow and ±∞ to ±max).</summary>
    public static byte ToE5M2(float x) => Convert(x, expBits: 5, manBits: 2, bias: 15, maxBits: 0x7B, nan: 0x7F, infToMax: true);

    private static byte Convert(float x, int expBits, int manBits, int bias, int maxBits, byte nan, bool infToMax)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        byte sign = (byte)((bits >> 24) & 0x80);
        if (float.IsNaN(x)) return (byte)(sign | nan);
        float a = MathF.Abs(x);
        if (float.IsInfinity(a)) return infToMax ? (byte)(sign | maxBits) : (byte)(sign | 0x7C);
        if (a == 0) return sign;
        // Exact grid: values are m · 2^(e − bias − manBits). Find the exponent of a, then round the mantissa half to even.
        int e = Math.Max(MathF.ILogB(a), 1 - bias);               // subnormals share the minimum exponent
        double quantum = Math.ScaleB(1.0, e - manBits);          // spacing of the grid at this exponent
        double m = Math.Round(a / quantum, MidpointRounding.ToEven);
        double value = m * quantum;
        if (m >= (1 << (manBits + 1))) { e++; }                  // rounding carried into the next binade
        double max = DecodeMax(maxBits, expBits, manBits, bias);
        if (value > max) return (byte)(sign | maxBits);
        // Encode value.
        int exp = Math.Max(MathF.ILogB((float)value), 1 - bias);
        double q2 = Math.ScaleB(1.0, exp - manBits);
        int mant = (int)Math.Round(value / q2);
        int field;
        if (mant < (1 << manBits)) field = mant;                 // subnormal: exponent field 0
        else field = ((exp + bias) << manBits) | (mant - (1 << manBits));
        return (byte)(sign | field);
    }

    private static double DecodeMax(int maxBits, int expBits, int manBits, int bias)
    {
        int e = maxBits >> manBits, m = maxBits & ((1 << manBits) - 1);
        return Math.ScaleB(1.0 + m / (double)(1 << manBits), e - bias);
    }
}
