using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// quantize_kv's stored cache (<c>storage: native</c>): the past inputs and present outputs of an attention become int8 (8 bits)
/// or uint8 with two 4-bit values per byte (the first in the low nibble, each q + 8), which the op writes and reads itself —
/// com.microsoft GroupQueryAttention (ONNX Runtime 1.32, CPU and CUDA: attributes <c>k_quant_type</c> / <c>v_quant_type</c>
/// PER_CHANNEL or PER_TENSOR and <c>kv_cache_bit_width</c>, dequantization scales at inputs 12 / 13) or ai.quantc.CausalAttention
/// (<c>kv_cache_bit_width</c>, scales as the float attributes <c>k_cache_scale</c> / <c>v_cache_scale</c>; same bytes).
/// Quantization is symmetric with static scales calibrated here on the present outputs (what the op stores: keys after its
/// RoPE / R3 inside): per KV head and channel (or one per tensor) s = r · absmax / (2^(bits−1) − 1), the clip ratio r chosen from
/// the grid by the squared error on sampled calibration tokens. The scales go into the metadata (<see cref="KvStorage"/>) so
/// that verify reads the stored cache back in float. The cache then takes 1 (8 bits) or ½ (4 bits) byte per value instead of 4.
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
        bool gqa = a.Form == "GroupQueryAttention", causal = a.Form == "CausalAttention";
        if (!gqa && !causal)
            return $"a stored integer cache needs com.microsoft GroupQueryAttention (ONNX Runtime's attention with a quantized " +
                $"past/present) or ai.quantc.CausalAttention (lower_attention); this is {a.Form}";
        if (gqa && ((n.GetString("k_quant_type") ?? "NONE") != "NONE" || (n.GetString("v_quant_type") ?? "NONE") != "NONE"))
            return "its cache is already quantized";
        if (causal && n.GetInt("kv_cache_bit_width", 0) != 0) return "its cache is already stored as integers";
        int past = gqa ? 3 : 4;
        var p0 = past < n.Inputs.Count ? n.Inputs[past] : null;
        if (p0?.Shape is not { Length: 4 } s0 || s0[3] is not > 0 || s0[1] is not > 0)
            return "its past cache is not [batch, kv heads, sequence, head size] with a static head count and head size";
        long d = s0[3]!.Value;
        if (bits == 4 && d % 2 != 0) return $"head size {d} is odd: 4-bit values are stored two per byte";
        for (int i = past; i <= past + 1; i++)
        {
            var p = i < n.Inputs.Count ? n.Inputs[i] : null;
            if (p is null || !p.IsGraphInput || p.IsInitializer)
                return $"input {i} is not a past-cache graph input (a constant prefix or a transform stands before the op)";
            if (p.Uses.Count != 1) return $"past '{p.Name}' is read by other nodes too";
            if (p.ElementType != (int)DT.Float) return $"past '{p.Name}' is of ONNX type {p.ElementType}, not float32";
            if (p.Shape is not { Length: 4 } ps || ps[1] != s0[1] || ps[3] != d)
                return $"past '{p.Name}' is not [batch, {s0[1]}, sequence, {d}]";
            var o = i - past + 1 < n.Outputs.Count ? n.Outputs[i - past + 1] : null;
            if (o is null || !o.IsGraphOutput || o.Uses.Count > 0) return $"output {i - past + 1} is not a present-cache graph output";
        }
        if (gqa)
            for (int i = KScaleInput; i < n.Inputs.Count; i++)
                if (n.Inputs[i] is not null) return $"input {i} is already in use";
        return null;
    }

    /// <summary>Calibrates what enters the sites' caches — the present outputs, which hold the keys as the op stores them (after
    /// RoPE or R3 inside the op) — rewrites each site and records the formats in the metadata.</summary>
    public void Run(PassContext ctx, IReadOnlyList<AttentionSite> sites, string pass)
    {
        var g = ctx.Model.Graph;
        var tensors = new Dictionary<string, Samples>(StringComparer.Ordinal);
        foreach (var a in sites)
        {
            var shape = a.Node.Inputs[a.Form == "GroupQueryAttention" ? 3 : 4]!.Shape!;
            foreach (int i in new[] { 1, 2 }) tensors.TryAdd(a.Node.Outputs[i]!.Name, new Samples(shape[3]!.Value, shape[1]!.Value));
        }
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
            bool gqa = a.Form == "GroupQueryAttention";
            int past = gqa ? 3 : 4;
            var line = new List<string>();
            var scales = new float[2][];
            long d = 0;
            for (int k = 0; k < 2; k++)
            {
                var present = n.Outputs[1 + k]!;
                var s = tensors[present.Name];
                d = s.Head;
                if (s.Seen == 0)
                    throw new Quantc.Onnx.BadInputException($"{pass}: {a.Name}: no calibration token reached '{present.Name}'");
                var (scale, ratios, e, dynamic) = Choose(s);
                err += e; dyn += dynamic;
                scales[k] = scale;
                var pastValue = n.Inputs[past + k]!;
                Retype(pastValue, d); Retype(present, d);
                groups.Add(KvStorage.Group(bits, (int)s.Heads, (int)d, scale, [pastValue.Name, present.Name]));
                line.Add(string.Create(CultureInfo.InvariantCulture, $"{(k == 0 ? "keys" : "values")} scale " +
                    $"{scale.Min():0.###e0}–{scale.Max():0.###e0}" +
                    $"{(ratios.Any(r => r < 1) ? $" (clipped in {ratios.Count(r => r < 1)} of {ratios.Length})" : "")}, MSE " +
                    $"{e / s.Values:0.###e0} (dynamic per token and head {dynamic / s.Values:0.###e0})"));
            }
            if (gqa)
            {
                long heads = tensors[n.Outputs[1]!.Name].Heads;
                long[] dims = perChannel ? [1, heads, 1, d] : [1];
                var kScale = g.AddInitializer(Tensor.FromFloats(g.UniqueName($"{a.Name}/keys_cache_scale"), dims, scales[0]));
                var vScale = g.AddInitializer(Tensor.FromFloats(g.UniqueName($"{a.Name}/values_cache_scale"), dims, scales[1]));
                while (n.Inputs.Count < KScaleInput) n.AddInput(null);
                if (n.Inputs.Count == KScaleInput) n.AddInput(kScale); else n.SetInput(KScaleInput, kScale);
                if (n.Inputs.Count == KScaleInput + 1) n.AddInput(vScale); else n.SetInput(KScaleInput + 1, vScale);
                string type = perChannel ? "PER_CHANNEL" : "PER_TENSOR";
                n.SetAttribute("k_quant_type", type);
                n.SetAttribute("v_quant_type", type);
            }
            else
            {
                n.SetAttribute(Floats("k_cache_scale", scales[0]));
                n.SetAttribute(Floats("v_cache_scale", scales[1]));
            }
            n.SetAttribute("kv_cache_bit_width", (long)bits);
            string per = perChannel ? "per KV head and channel" : "per tensor";
            string inside = a.RopeInside is null ? "" : " (keys calibrated as the op stores them, after its RoPE / R3 inside)";
            ctx.Log.Add($"{pass}: {a.Name} ({a.Form}): cache stored as {Stored(d)}, static symmetric {per}{inside}: " +
                string.Join("; ", line));
        }
        ctx.Model.SetMetadata(KvStorage.Key, string.Join("|", groups));
        ctx.Log.Add(string.Create(CultureInfo.InvariantCulture, $"{pass}: {sites.Count} attention cache(s) stored as " +
            $"{Stored(tensors.Values.First().Head)} ({(bits == 8 ? "1 byte" : "½ byte")} per value instead of float32's 4): squared " +
            $"error on the sampled tokens {err:0.###e0} vs {dyn:0.###e0} with dynamic per-token-and-head scales " +
            $"({err / Math.Max(dyn, 1e-30):0.##}×)"));
    }

    /// <summary>A float-list attribute.</summary>
    internal static Quantc.Onnx.Proto.AttributeProto Floats(string name, float[] values)
    {
        var a = new Quantc.Onnx.Proto.AttributeProto { Name = name, Type = Quantc.Onnx.Proto.AttributeProto.Types.AttributeType.Floats };
        a.Floats.AddRange(values);
        return a;
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

    /// <summary>Sampled tokens ([heads · head] each, head-major) and the absolute maximum per channel of one present cache,
    /// observed as [1, heads, sequence, head] per calibration sample.</summary>
    private sealed class Samples(long head, long heads)
    {
        public readonly long Head = head, Heads = heads;
        public readonly List<float[]> Tokens = [];
        public readonly float[] Max = new float[heads * head];
        public long Seen;

        public long Values => Tokens.Count * Max.Length;

        public void Add(ReadOnlySpan<float> data)
        {
            int w = Max.Length, d = (int)Head, h = (int)Heads, n = data.Length / w;
            for (int t = 0; t < n; t++)
            {
                var tok = new float[w];
                for (int j = 0; j < h; j++) data.Slice((j * n + t) * d, d).CopyTo(tok.AsSpan(j * d, d));
                for (int c = 0; c < w; c++) Max[c] = Math.Max(Max[c], Math.Abs(tok[c]));
                if (Tokens.Count < MaxTokens) Tokens.Add(tok);
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

    private double Err(float v, float s)
    {
        double q = Math.Clamp(Math.Round(v / s, MidpointRounding.ToEven), -QMax - 1, QMax) * s;
        return (v - q) * (v - q);
    }
}
