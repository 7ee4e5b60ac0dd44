using System.Globalization;
using Quantc.Onnx;

namespace Quantc.Core.Numerics;

/// <summary>
/// The KV-cache tensors a rotation pass left in a rotated basis, read from the model's metadata, with the
/// transforms between the two bases (per head: every consecutive chunk of the head size along the last axis).
/// <list type="bullet">
/// <item><c>quantc.value_cache_rotation</c> (QuaRot's R2, rotate_head): <c>HEAD:SEED:NAME,NAME…</c>, groups joined
/// by <c>|</c>; the cache holds v·Q with Q = <see cref="Rotation.Create"/>(HEAD, SEED).</item>
/// <item><c>quantc.key_cache_rotation</c> (QuaRot's R3, rotate_qk): <c>HEAD:NAME,NAME…</c>, groups joined by
/// <c>|</c>; the cache holds k·Hᵀ/√HEAD with H = <see cref="Hadamard.Matrix"/>(HEAD) — what ai.quantc.Hadamard computes.</item>
/// </list>
/// The names are the present outputs and the past inputs: outputs come out rotated, and a past fed back
/// must be in the rotated basis too (as the model's own present outputs are).
/// </summary>
public sealed class CacheRotations
{
    /// <summary>Metadata key of the value-cache rotation (R2).</summary>
    public const string ValueKey = "quantc.value_cache_rotation";

    /// <summary>Metadata key of the key-cache rotation (R3).</summary>
    public const string KeyKey = "quantc.key_cache_rotation";

    private readonly Dictionary<string, Transform> _map = new(StringComparer.Ordinal);

    private sealed record Transform(int Size, double[] ToRotated, double[] ToOriginal);

    /// <summary>True when no cache tensor is rotated.</summary>
    public bool IsEmpty => _map.Count == 0;

    /// <summary>Names of the rotated cache tensors.</summary>
    public IEnumerable<string> Names => _map.Keys;

    /// <summary>Whether <paramref name="name"/> (an output or input) is held in a rotated basis.</summary>
    public bool Contains(string name) => _map.ContainsKey(name);

    /// <summary>The rotations recorded in <paramref name="metadata"/>; a malformed entry is a <see cref="BadInputException"/>.</summary>
    public static CacheRotations Of(IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var r = new CacheRotations();
        var md = metadata.ToList();
        foreach (var group in Groups(md, ValueKey))
        {
            var parts = group.Split(':', 3);
            if (parts.Length != 3 || !TryOrder(parts[0], out int size)
                || !int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int seed))
                throw new BadInputException($"the model's metadata {ValueKey} is malformed: '{group}'");
            var q = Rotation.Create(size, seed).Matrix();
            r.Add(parts[2], new Transform(size, q, Transposed(q, size)));
        }
        foreach (var group in Groups(md, KeyKey))
        {
            var parts = group.Split(':', 2);
            if (parts.Length != 2 || !TryOrder(parts[0], out int size) || !Hadamard.IsSupported(size))
                throw new BadInputException($"the model's metadata {KeyKey} is malformed: '{group}' (want HEAD:NAME,… with a Hadamard " +
                    $"order HEAD)");
            // Row vectors: k ↦ k·Hᵀ/√d (the op's y = H·k/√d); back: k' ↦ k'·H/√d, since HᵀH = d·I.
            var h = Hadamard.Matrix(size);
            double s = 1 / Math.Sqrt(size);
            var fwd = new double[size * size];
            var back = new double[size * size];
            for (int i = 0; i < size; i++)
                for (int j = 0; j < size; j++) { fwd[i * size + j] = h[j * size + i] * s; back[i * size + j] = h[i * size + j] * s; }
            r.Add(parts[1], new Transform(size, fwd, back));
        }
        return r;
    }

    /// <summary>x ← the original-basis tensor of the rotated cache tensor <paramref name="name"/> (in place).</summary>
    public void ToOriginal(string name, Span<float> x) => Apply(_map[name], x, inverse: true);

    /// <summary>x ← the rotated-basis tensor <paramref name="name"/> holds for the original-basis <paramref name="x"/> (in
    /// place).</summary>
    public void ToRotated(string name, Span<float> x) => Apply(_map[name], x, inverse: false);

    private void Add(string names, Transform t)
    {
        foreach (var n in names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (!_map.TryAdd(n, t))
                throw new BadInputException($"cache tensor '{n}' is named by more than one rotation in the model's metadata");
    }

    private static IEnumerable<string> Groups(List<KeyValuePair<string, string>> md, string key) =>
        md.Where(kv => kv.Key == key).SelectMany(kv => kv.Value.Split('|', StringSplitOptions.RemoveEmptyEntries));

    private static bool TryOrder(string s, out int size) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out size) && size > 0 && size <= 1 << 14;

    private static double[] Transposed(double[] q, int d)
    {
        var t = new double[q.Length];
        for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) t[j * d + i] = q[i * d + j];
        return t;
    }

    /// <summary>x ← x·M (forward) or x·M' (inverse) for every consecutive chunk along the last axis, in double.</summary>
    private static void Apply(Transform t, Span<float> x, bool inverse)
    {
        int d = t.Size;
        if (x.Length % d != 0) throw new BadInputException($"a rotated cache tensor of {x.Length} values is not whole heads of {d}");
        var m = inverse ? t.ToOriginal : t.ToRotated;
        var buf = new double[d];
        for (int o = 0; o < x.Length; o += d)
        {
            var chunk = x.Slice(o, d);
            Array.Clear(buf);
            for (int i = 0; i < d; i++)
            {
                double xi = chunk[i];
                if (xi == 0) continue;
                for (int j = 0; j < d; j++) buf[j] += xi * m[i * d + j];
            }
            for (int j = 0; j < d; j++) chunk[j] = (float)buf[j];
        }
    }
}
