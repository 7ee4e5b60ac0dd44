using System.Globalization;
using Quantc.Onnx;

namespace Quantc.Core.Numerics;

/// <summary>
/// The KV-cache inputs and outputs a model stores as integers (quantize_kv's <c>storage: native</c>: ONNX Runtime's
/// GroupQueryAttention with a quantized cache), read from the model's metadata <c>quantc.kv_cache_storage</c>:
/// <c>BITS:HEADS:HEAD:F;F;…:NAME,NAME…</c>, groups joined by <c>|</c>. The cache [batch, HEADS, sequence, HEAD] holds
/// q = clamp(round(x / s), −2^(BITS−1), 2^(BITS−1) − 1) symmetric, with s one factor for the tensor or one per head and
/// channel (HEADS·HEAD factors, head-major); 8 bits as int8, 4 bits as uint8 with two values per byte (the first of a pair
/// in the low nibble), each stored as q + 8 — ONNX Runtime's packing. The names are the past inputs and present outputs.
/// </summary>
public sealed class KvStorage
{
    /// <summary>Metadata key of the stored caches.</summary>
    public const string Key = "quantc.kv_cache_storage";

    private sealed record Format(int Bits, int Heads, int Head, float[] Scales);

    private readonly Dictionary<string, Format> _map = new(StringComparer.Ordinal);

    /// <summary>True when no cache tensor is stored as integers.</summary>
    public bool IsEmpty => _map.Count == 0;

    /// <summary>Whether <paramref name="name"/> (a past input or present output) is stored as integers.</summary>
    public bool Contains(string name) => _map.ContainsKey(name);

    /// <summary>The bits per value of <paramref name="name"/>.</summary>
    public int Bits(string name) => _map[name].Bits;

    /// <summary>The metadata text of one group (what quantize_kv writes): <paramref name="scales"/> one for the tensor or per head
    /// and channel.</summary>
    public static string Group(int bits, int heads, int head, IReadOnlyList<float> scales, IEnumerable<string> names) =>
        string.Create(CultureInfo.InvariantCulture, $"{bits}:{heads}:{head}:{string.Join(";", scales.Select(f => f.ToString("R",
            CultureInfo.InvariantCulture)))}:{string.Join(",", names)}");

    /// <summary>The stored caches recorded in <paramref name="metadata"/>; a malformed entry is a <see cref="BadInputException"/>.
    /// </summary>
    public static KvStorage Of(IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var r = new KvStorage();
        foreach (var (k, v) in metadata)
        {
            if (k != Key) continue;
            foreach (var group in v.Split('|', StringSplitOptions.RemoveEmptyEntries))
            {
                var parts = group.Split(':', 5);
                float[]? scales = parts.Length == 5 ? ParseScales(parts[3]) : null;
                if (parts.Length != 5 || !int.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int bits)
                    || bits is not (4 or 8)
                    || !int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int heads) || heads <= 0
                    || !int.TryParse(parts[2], NumberStyles.Integer, CultureInfo.InvariantCulture, out int head) || head <= 0
                    || (bits == 4 && head % 2 != 0)
                    || scales is null || (scales.Length != 1 && scales.Length != heads * head))
                    throw new BadInputException($"the model's metadata {Key} is malformed: '{group}' (want BITS:HEADS:HEAD:F;…:NAME,… " +
                        "with BITS 4 or 8 and one factor or HEADS·HEAD of them)");
                var f = new Format(bits, heads, head, scales);
                foreach (var n in parts[4].Split(',', StringSplitOptions.RemoveEmptyEntries)) r._map[n] = f;
            }
        }
        return r;
    }

    private static float[]? ParseScales(string text)
    {
        var items = text.Split(';');
        var f = new float[items.Length];
        for (int i = 0; i < items.Length; i++)
            if (!float.TryParse(items[i], NumberStyles.Float, CultureInfo.InvariantCulture, out f[i]) || !(f[i] > 0)
                || !float.IsFinite(f[i]))
                return null;
        return f;
    }

    /// <summary>The logical shape of a stored tensor of <paramref name="stored"/> shape (4 bits: the last axis holds two values per
    /// byte).</summary>
    public long[] LogicalShape(string name, ReadOnlySpan<long> stored)
    {
        var s = stored.ToArray();
        if (_map[name].Bits == 4 && s.Length > 0) s[^1] *= 2;
        return s;
    }

    /// <summary>The float32 values of the stored tensor <paramref name="name"/>: <paramref name="data"/> is int8 (8 bits) or the
    /// packed uint8 (4 bits) of [batch, heads, sequence, head] in <paramref name="stored"/> shape.</summary>
    public float[] Dequantize(string name, Array data, ReadOnlySpan<long> stored)
    {
        var f = _map[name];
        var shape = LogicalShape(name, stored);
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var x = new float[count];
        long t = Rows(f, shape);
        if (f.Bits == 8)
        {
            var q = data.GetType() == typeof(sbyte[]) ? (sbyte[])data
                : throw new BadInputException($"stored cache '{name}' should be int8, is {data.GetType().Name}");
            if (q.LongLength != count) throw new BadInputException($"stored cache '{name}' has {q.LongLength} values, its shape {count}");
            for (long i = 0; i < count; i++) x[i] = q[i] * Scale(f, i, t);
        }
        else
        {
            var u = data.GetType() == typeof(byte[]) ? (byte[])data
                : throw new BadInputException($"stored cache '{name}' should be uint8, is {data.GetType().Name}");
            if (u.LongLength * 2 != count)
                throw new BadInputException($"stored cache '{name}' has {u.LongLength} bytes for {count} values");
            for (long i = 0; i < count; i++)
            {
                int nib = (i & 1) == 0 ? u[i >> 1] & 15 : u[i >> 1] >> 4;
                x[i] = (nib - 8) * Scale(f, i, t);
            }
        }
        return x;
    }

    /// <summary>The stored form of the float32 tensor <paramref name="x"/> of logical <paramref name="shape"/> [batch, heads,
    /// sequence, head] (what the model's own present output holds for those values), and its stored shape.</summary>
    public (Array Data, long[] Shape) Quantize(string name, ReadOnlySpan<float> x, ReadOnlySpan<long> shape)
    {
        var f = _map[name];
        long t = Rows(f, shape);
        var stored = shape.ToArray();
        int lo = -(1 << (f.Bits - 1)), hi = (1 << (f.Bits - 1)) - 1;
        var q = new int[x.Length];
        for (int i = 0; i < x.Length; i++) q[i] = (int)Math.Clamp(Math.Round(x[i] / Scale(f, i, t), MidpointRounding.ToEven), lo, hi);
        if (f.Bits == 8) return (q.Select(v => (sbyte)v).ToArray(), stored);
        if (stored.Length > 0) stored[^1] /= 2;
        var u = new byte[x.Length / 2];
        for (int i = 0; i + 1 < x.Length; i += 2) u[i >> 1] = (byte)((q[i] + 8) | ((q[i + 1] + 8) << 4));
        return (u, stored);
    }

    // Rows per head (the sequence axis) of a [batch, heads, sequence, head] tensor; its shape must match the format.
    private static long Rows(Format f, ReadOnlySpan<long> shape)
    {
        if (shape.Length != 4 || shape[1] != f.Heads || shape[3] != f.Head)
            throw new BadInputException($"a stored KV cache is [batch, {f.Heads}, sequence, {f.Head}]; got " +
                $"[{string.Join(", ", shape.ToArray())}]");
        return shape[2];
    }

    private static float Scale(Format f, long i, long rows) =>
        f.Scales.Length == 1 ? f.Scales[0] : f.Scales[(int)(i / (rows * f.Head) % f.Heads * f.Head + i % f.Head)];
}
