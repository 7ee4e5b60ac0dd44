using System.Globalization;
using Quantc.Onnx;

namespace Quantc.Core.Numerics;

/// <summary>
/// The KV-cache tensors a pass left in another basis — rotated (QuaRot) or scaled (FireQ) — read from the model's metadata, with the
/// transforms between the two bases.
/// <list type="bullet">
/// <item><c>quantc.value_cache_rotation</c> (QuaRot's R2, rotate_head): <c>HEAD:SEED:NAME,NAME…</c>, groups joined
/// by <c>|</c>; the cache holds v·Q with Q = <see cref="Rotation.Create"/>(HEAD, SEED) on every head.</item>
/// <item><c>quantc.key_cache_rotation</c> (QuaRot's R3, rotate_qk): <c>HEAD:NAME,NAME…</c>, groups joined by
/// <c>|</c>; the cache holds k·Hᵀ/√HEAD with H = <see cref="Hadamard.Matrix"/>(HEAD) — what ai.quantc.Hadamard computes.</item>
/// <item><c>quantc.key_cache_scale</c> (FireQ's pre- and post-RoPE key scaling, fireq_rope): <c>HEADS:HEAD:F;F;…:NAME,NAME…</c>,
/// groups joined by <c>|</c>; the cache holds k·diag(F) with one factor per KV head and channel (HEADS·HEAD factors, head-major).</item>
/// <item><c>quantc.value_cache_scale</c> (FireQ's v_proj × 0.9, fireq_scale): <c>F:NAME,NAME…</c>, groups joined by <c>|</c>; the
/// cache holds F·v.</item>
/// </list>
/// The names are the present outputs and the past inputs: outputs come out transformed, and a past fed back must be in the
/// transformed basis too (as the model's own present outputs are). A tensor takes one transform; a scalar scale composes with any.
/// </summary>
public sealed class CacheTransforms
{
    /// <summary>Metadata key of the value-cache rotation (R2).</summary>
    public const string ValueKey = "quantc.value_cache_rotation";

    /// <summary>Metadata key of the key-cache rotation (R3).</summary>
    public const string KeyKey = "quantc.key_cache_rotation";

    /// <summary>Metadata key of the key cache's per-head, per-channel scale (FireQ).</summary>
    public const string KeyScaleKey = "quantc.key_cache_scale";

    /// <summary>Metadata key of the value cache's scalar scale (FireQ).</summary>
    public const string ValueScaleKey = "quantc.value_cache_scale";

    private readonly Dictionary<string, Transform> _map = new(StringComparer.Ordinal);
    private readonly Dictionary<string, double> _scalar = new(StringComparer.Ordinal);

    /// <summary>A rotation (the same d×d matrix on every head) or, with <see cref="Heads"/> &gt; 0, a diagonal of
    /// <see cref="Heads"/>·<see cref="Size"/> factors.</summary>
    private sealed record Transform(int Size, double[] ToRotated, double[] ToOriginal, int Heads = 0);

    /// <summary>True when no cache tensor is transformed.</summary>
    public bool IsEmpty => _map.Count == 0 && _scalar.Count == 0;

    /// <summary>Names of the transformed cache tensors.</summary>
    public IEnumerable<string> Names => _map.Keys.Union(_scalar.Keys);

    /// <summary>Whether <paramref name="name"/> (an output or input) is held in another basis.</summary>
    public bool Contains(string name) => _map.ContainsKey(name) || _scalar.ContainsKey(name);

    /// <summary>The transforms recorded in <paramref name="metadata"/>; a malformed entry is a <see cref="BadInputException"/>.</summary>
    public static CacheTransforms Of(IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var r = new CacheTransforms();
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
        foreach (var group in Groups(md, KeyScaleKey))
        {
            var (names, t) = Diagonal(group);
            r.Add(names, t);
        }
        foreach (var group in Groups(md, ValueScaleKey))
        {
            var parts = group.Split(':', 2);
            if (parts.Length != 2 || !TryFactor(parts[0], out double f))
                throw new BadInputException($"the model's metadata {ValueScaleKey} is malformed: '{group}' (want FACTOR:NAME,…)");
            foreach (var n in NamesOf(parts[1]))
                r._scalar[n] = r._scalar.TryGetValue(n, out double prior) ? prior * f : f;
        }
        return r;
    }

    /// <summary>A key-scale group <c>HEADS:HEAD:F;F;…:NAMES</c>: its names and its diagonal transform.</summary>
    private static (string Names, Transform T) Diagonal(string group)
    {
        var parts = group.Split(':', 4);
        double[] f = [];
        if (parts.Length != 4 || !TryOrder(parts[0], out int heads) || !TryOrder(parts[1], out int size)
            || (f = parts[2].Split(';').Select(x => TryFactor(x, out double v) ? v : double.NaN).ToArray()).Length != heads * size
            || f.Any(double.IsNaN))
            throw new BadInputException($"the model's metadata {KeyScaleKey} is malformed: '{Shorten(group)}' " +
                "(want HEADS:HEAD:F;F;…:NAME,… " +
                "with HEADS·HEAD finite non-zero factors)");
        return (parts[3], new Transform(size, f, f.Select(x => 1 / x).ToArray(), heads));
    }

    /// <summary>The metadata text of a key-scale group (what fireq_rope writes): <paramref name="factors"/> per KV head and
    /// channel, head-major, for the cache tensors <paramref name="names"/>.</summary>
    public static string KeyScaleGroup(int heads, int headSize, IReadOnlyList<float> factors, IEnumerable<string> names) =>
        string.Create(CultureInfo.InvariantCulture, $"{heads}:{headSize}:") + string.Join(";", factors.Select(x =>
            x.ToString("R", CultureInfo.InvariantCulture))) + ":" + string.Join(",", names);

    /// <summary>x ← the original-basis tensor of the transformed cache tensor <paramref name="name"/> (in place); its
    /// <paramref name="shape"/> locates the heads of a per-head scale ([B, heads, S, head] or [.., heads·head]).</summary>
    public void ToOriginal(string name, Span<float> x, ReadOnlySpan<long> shape = default) => Apply(name, x, shape, inverse: true);

    /// <summary>x ← the transformed tensor <paramref name="name"/> holds for the original-basis <paramref name="x"/> (in place; the
    /// <paramref name="shape"/> as in <see cref="ToOriginal"/>).</summary>
    public void ToRotated(string name, Span<float> x, ReadOnlySpan<long> shape = default) => Apply(name, x, shape, inverse: false);

    private void Apply(string name, Span<float> x, ReadOnlySpan<long> shape, bool inverse)
    {
        if (_map.TryGetValue(name, out var t))
        {
            if (t.Heads > 0) Scale(name, t, x, shape, inverse);
            else Rotate(t, x, inverse);
        }
        if (_scalar.TryGetValue(name, out double f))
        {
            float k = (float)(inverse ? 1 / f : f);
            foreach (ref float v in x) v *= k;
        }
    }

    private void Add(string names, Transform t)
    {
        foreach (var n in NamesOf(names))
            if (!_map.TryAdd(n, t))
                throw new BadInputException($"cache tensor '{n}' is named by more than one rotation or per-channel scale in the model's " +
                    "metadata (they do not commute)");
    }

    private static string[] NamesOf(string names) =>
        names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static IEnumerable<string> Groups(List<KeyValuePair<string, string>> md, string key) =>
        md.Where(kv => kv.Key == key).SelectMany(kv => kv.Value.Split('|', StringSplitOptions.RemoveEmptyEntries));

    private static bool TryOrder(string s, out int size) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out size) && size > 0 && size <= 1 << 14;

    private static bool TryFactor(string s, out double f) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out f) && double.IsFinite(f) && f != 0;

    private static string Shorten(string s) => s.Length <= 80 ? s : s[..80] + "…";

    private static double[] Transposed(double[] q, int d)
    {
        var t = new double[q.Length];
        for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) t[j * d + i] = q[i * d + j];
        return t;
    }

    /// <summary>x ← x·M (forward) or x·M' (inverse) for every consecutive chunk along the last axis, in double.</summary>
    private static void Rotate(Transform t, Span<float> x, bool inverse)
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

    /// <summary>x ← x·diag(F) or x·diag(1/F) per head and channel: on [B, heads, S, head] (the cache layout of eager attention,
    /// GroupQueryAttention and ONNX Attention) or on any tensor whose last axis is heads·head.</summary>
    private static void Scale(string name, Transform t, Span<float> x, ReadOnlySpan<long> shape, bool inverse)
    {
        int d = t.Size, heads = t.Heads;
        var f = inverse ? t.ToOriginal : t.ToRotated;
        if (shape.Length == 4 && shape[1] == heads && shape[3] == d)
        {
            long rows = shape[2];
            for (long o = 0, r = 0; o < x.Length; o += d, r++)
            {
                int h = (int)(r / rows % heads);
                var chunk = x.Slice((int)o, d);
                for (int j = 0; j < d; j++) chunk[j] = (float)(chunk[j] * f[h * d + j]);
            }
            return;
        }
        if (shape.IsEmpty) throw new ArgumentException($"the per-head scale of cache tensor '{name}' needs the tensor's shape");
        if (shape[^1] != (long)heads * d || x.Length % (heads * d) != 0)
            throw new BadInputException($"cache tensor '{name}' of shape [{string.Join(", ", shape.ToArray())}] is neither " +
                $"[B, {heads}, S, {d}] nor [.., {heads * d}], as its per-head scale in the model's metadata needs");
        for (int o = 0; o < x.Length; o += heads * d)
        {
            var row = x.Slice(o, heads * d);
            for (int j = 0; j < row.Length; j++) row[j] = (float)(row[j] * f[j]);
        }
    }
}
