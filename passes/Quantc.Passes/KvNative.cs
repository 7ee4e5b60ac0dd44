using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// quantize_kv's stored cache (<c>storage: native</c>): the past inputs and present outputs of com.microsoft GroupQueryAttention
/// become int8 (8 bits) or uint8 with two 4-bit values per byte, which ONNX Runtime's GroupQueryAttention (1.32, CPU and CUDA)
/// writes and reads itself: attributes <c>k_quant_type</c> / <c>v_quant_type</c> (PER_CHANNEL or PER_TENSOR) and
/// <c>kv_cache_bit_width</c>, dequantization scales at inputs 12 / 13. Quantization is symmetric with static scales calibrated here:
/// per KV head and channel (or one per tensor) s = r · absmax / (2^(bits−1) − 1), the clip ratio r chosen from the grid by the
/// squared error on sampled calibration tokens. The scales go into the metadata (<see cref="KvStorage"/>) so that verify reads
/// the stored cache back in float. The cache then takes 1 (8 bits) or ½ (4 bits) byte per value instead of float32's 4.
/// </summary>
internal sealed class KvNative(int bits, bool perChannel, IReadOnlyList<double> grid)
{
    private const int MaxTokens = 2048;
    private const int KScaleInput = 12;

    private int QMax => (1 << (bits - 1)) - 1;

    /// <summary>Why <paramref name="a"/>'s cache cannot be stored as integers, or null.</summary>
    public string? Why(Graph g, AttentionSite a)
    {
        var n = a.Node;
        if (a.Form != "GroupQueryAttention")
            return $"a stored integer cache needs com.microsoft GroupQueryAttention (ONNX Runtime's attention with a quantized " +
                $"past/present); this is {a.Form}";
        if (a.RopeInside is not null && Rope.Of(n, a.HeadDim) is null)
            return a.RopeInside + ", and its cos/sin caches (inputs 7, 8) are not constant [positions, R/2] tables with R ≤ head size";
        if (a.Keys is null) return "keys: " + a.KeysWhy;
        if (a.Values is null) return "values: " + a.ValuesWhy;
        if ((n.GetString("k_quant_type") ?? "NONE") != "NONE" || (n.GetString("v_quant_type") ?? "NONE") != "NONE")
            return "its cache is already quantized";
        if (a.HeadDim is not { } d) return "the head size is unknown";
        if (bits == 4 && d % 2 != 0) return $"head size {d} is odd: 4-bit values are stored two per byte";
        for (int i = 3; i <= 4; i++)
        {
            var p = i < n.Inputs.Count ? n.Inputs[i] : null;
            if (p is null || !p.IsGraphInput || p.IsInitializer)
                return $"input {i} is not a past-cache graph input (a constant prefix or a transform stands before the op)";
            if (p.Uses.Count != 1) return $"past '{p.Name}' is read by other nodes too";
            if (p.ElementType != (int)DT.Float) return $"past '{p.Name}' is of ONNX type {p.ElementType}, not float32";
            if (p.Shape is not { Length: 4 } ps || ps[1] is not > 0 || ps[3] != d)
                return $"past '{p.Name}' is not [batch, kv heads, sequence, {d}] with a static head count";
            var o = i - 2 < n.Outputs.Count ? n.Outputs[i - 2] : null;
            if (o is null || !o.IsGraphOutput || o.Uses.Count > 0) return $"output {i - 2} is not a present-cache graph output";
        }
        for (int i = KScaleInput; i < n.Inputs.Count; i++)
            if (n.Inputs[i] is not null) return $"input {i} is already in use";
        return null;
    }

    /// <summary>Calibrates the sites' new keys and values, rewrites each site and records the formats in the metadata.</summary>
    public void Run(PassContext ctx, IReadOnlyList<AttentionSite> sites, string pass)
    {
        var g = ctx.Model.Graph;
        var tensors = new Dictionary<string, Samples>(StringComparer.Ordinal);
        foreach (var a in sites)
            foreach (int i in new[] { 1, 2 })
                tensors.TryAdd(a.Node.Inputs[i]!.Name, new Samples(a.HeadDim!.Value, a.Node.Inputs[i + 2]!.Shape![1]!.Value,
                    i == 1 && a.RopeInside is not null ? Rope.Of(a.Node, a.HeadDim) : null));
        ctx.Calibrate([.. tensors.Keys], pass, (name, data, _) =>
        {
            if (!tensors.TryGetValue(name, out var s)) return;
            lock (s) s.Add(data);
        });
        var groups = new List<string>();
        double err = 0, dyn = 0;
        foreach (var a in sites)
        {
            var n = a.Node;
            int d = (int)a.HeadDim!.Value;
            var line = new List<string>();
            var scales = new Value[2];
            for (int k = 0; k < 2; k++)
            {
                var s = tensors[n.Inputs[1 + k]!.Name];
                if (s.Seen == 0)
                    throw new Quantc.Onnx.BadInputException($"{pass}: {a.Name}: no calibration token reached '{n.Inputs[1 + k]!.Name}'");
                var (scale, ratios, e, dynamic) = Choose(s);
                err += e; dyn += dynamic;
                string what = k == 0 ? "keys" : "values";
                long[] dims = perChannel ? [1, s.Heads, 1, d] : [1];
                scales[k] = g.AddInitializer(Tensor.FromFloats(g.UniqueName($"{a.Name}/{what}_cache_scale"), dims, scale));
                var past = n.Inputs[3 + k]!;
                var present = n.Outputs[1 + k]!;
                Retype(past, d); Retype(present, d);
                groups.Add(KvStorage.Group(bits, (int)s.Heads, d, scale, [past.Name, present.Name]));
                line.Add(string.Create(CultureInfo.InvariantCulture, $"{what} scale {scale.Min():0.###e0}–{scale.Max():0.###e0}" +
                    $"{(ratios.Any(r => r < 1) ? $" (clipped in {ratios.Count(r => r < 1)} of {ratios.Length})" : "")}, MSE " +
                    $"{e / s.Values:0.###e0} (dynamic per token and head {dynamic / s.Values:0.###e0})"));
            }
            while (n.Inputs.Count < KScaleInput) n.AddInput(null);
            if (n.Inputs.Count == KScaleInput) n.AddInput(scales[0]); else n.SetInput(KScaleInput, scales[0]);
            if (n.Inputs.Count == KScaleInput + 1) n.AddInput(scales[1]); else n.SetInput(KScaleInput + 1, scales[1]);
            string type = perChannel ? "PER_CHANNEL" : "PER_TENSOR";
            n.SetAttribute("k_quant_type", type);
            n.SetAttribute("v_quant_type", type);
            n.SetAttribute("kv_cache_bit_width", (long)bits);
            string per = perChannel ? "per KV head and channel" : "per tensor";
            string rope = a.RopeInside is null ? "" : " (keys calibrated after RoPE, applied here as the op applies it inside)";
            ctx.Log.Add($"{pass}: {a.Name}: cache stored as {Stored(d)}, static symmetric {per}{rope}" +
                $": {string.Join("; ", line)}");
        }
        ctx.Model.SetMetadata(KvStorage.Key, string.Join("|", groups));
        ctx.Log.Add(string.Create(CultureInfo.InvariantCulture, $"{pass}: {sites.Count} GroupQueryAttention cache(s) stored as " +
            $"{Stored(sites[0].HeadDim!.Value)} ({(bits == 8 ? "1 byte" : "½ byte")} per value instead of float32's 4): squared error on " +
            $"the sampled tokens {err:0.###e0} vs {dyn:0.###e0} with dynamic per-token-and-head scales " +
            $"({err / Math.Max(dyn, 1e-30):0.##}×)"));
    }

    private string Stored(long d) => bits == 8 ? "int8" : $"uint8 (two 4-bit values per byte, {d / 2} bytes per head row)";

    // The past input / present output as the stored type: int8, or uint8 with half the head axis.
    private void Retype(Value v, long d)
    {
        var t = v.Type!.Clone();
        t.TensorType.ElemType = bits == 8 ? (int)DT.Int8 : (int)DT.Uint8;
        if (bits == 4) t.TensorType.Shape.Dim[3].DimValue = d / 2;
        v.Type = t;
    }

    /// <summary>Sampled tokens ([heads · head] each) and the absolute maximum per channel of one new-key (value) tensor.</summary>
    private sealed class Samples(long head, long heads, Rope? rope)
    {
        public readonly long Head = head, Heads = heads;
        public readonly List<float[]> Tokens = [];
        public readonly float[] Max = new float[heads * head];
        public long Seen;

        public long Values => Tokens.Count * Max.Length;

        public void Add(ReadOnlySpan<float> data)
        {
            int w = Max.Length;
            for (int i = 0; i + w <= data.Length; i += w)
            {
                var tok = data.Slice(i, w);
                if (rope is not null)
                {
                    // A calibration sample starts at position 0 with an empty cache: token i / w is at position i / w.
                    var rotated = tok.ToArray();
                    for (int h = 0; h < Heads; h++) rope.Apply(rotated.AsSpan((int)(h * Head), (int)Head), i / w);
                    tok = rotated;
                }
                for (int c = 0; c < w; c++) Max[c] = Math.Max(Max[c], Math.Abs(tok[c]));
                if (Tokens.Count < MaxTokens) Tokens.Add(tok.ToArray());
                Seen++;
            }
        }
    }

    /// <summary>Per channel (or for the tensor) the clip ratio of the grid with the least squared error on the sampled tokens: the
    /// scales, the ratios, that error and the error of dynamic symmetric scales per token and head.</summary>
    private (float[] Scales, double[] Ratios, double Error, double Dynamic) Choose(Samples s)
    {
        int w = s.Max.Length, channels = perChannel ? w : 1;
        var scales = new float[channels];
        var ratios = new double[channels];
        double total = 0;
        for (int c = 0; c < channels; c++)
        {
            float max = perChannel ? s.Max[c] : s.Max.Max();
            if (max == 0) { scales[c] = 1; ratios[c] = 1; continue; }
            double best = double.MaxValue;
            foreach (double r in grid.Append(1.0).Distinct())
            {
                float sc = (float)(r * max / QMax);
                double e = 0;
                foreach (var tok in s.Tokens)
                    if (perChannel) e += Err(tok[c], sc);
                    else foreach (float v in tok) e += Err(v, sc);
                if (e < best) { best = e; scales[c] = sc; ratios[c] = r; }
            }
            total += best;
        }
        double dynamic = 0;
        foreach (var tok in s.Tokens)
            for (int h = 0; h < s.Heads; h++)
            {
                var head = tok.AsSpan((int)(h * s.Head), (int)s.Head);
                float m = 0;
                foreach (float v in head) m = Math.Max(m, Math.Abs(v));
                if (m > 0) foreach (float v in head) dynamic += Err(v, m / QMax);
            }
        return (scales, ratios, total, dynamic);
    }

    /// <summary>GroupQueryAttention's RoPE inside (do_rotary = 1) from its constant cos/sin caches: rotate-half (or interleaved
    /// pairs) over the first R = 2 · cache width dims of a head, as ONNX Runtime applies it to the keys before they enter the cache.
    /// </summary>
    private sealed class Rope(float[] cos, float[] sin, int half, int positions, bool interleaved)
    {
        public static Rope? Of(Node n, long? headDim)
        {
            if (n.Inputs.Count < 9 || n.Inputs[7]?.Initializer is not { } c || n.Inputs[8]?.Initializer is not { } s
                || c.Dims.Length != 2 || !c.Dims.SequenceEqual(s.Dims) || headDim is not { } d || c.Dims[1] * 2 > d || c.Dims[1] <= 0)
                return null;
            return new Rope(c.ToFloat32(), s.ToFloat32(), (int)c.Dims[1], (int)c.Dims[0], n.GetInt("rotary_interleaved", 0) != 0);
        }

        public void Apply(Span<float> x, int position)
        {
            if (position >= positions) throw new Quantc.Onnx.BadInputException(
                $"quantize_kv: a calibration token at position {position} is past the op's {positions}-row rotary cache");
            for (int i = 0; i < half; i++)
            {
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                float c = cos[position * half + i], s = sin[position * half + i], x1 = x[a], x2 = x[b];
                x[a] = x1 * c - x2 * s;
                x[b] = x2 * c + x1 * s;
            }
        }
    }

    private double Err(float v, float s)
    {
        double q = Math.Clamp(Math.Round(v / s, MidpointRounding.ToEven), -QMax - 1, QMax) * s;
        return (v - q) * (v - q);
    }
}
