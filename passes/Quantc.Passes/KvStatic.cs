using System.Globalization;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// quantize_kv's static scales (PrefixQuant's static KV cache): one asymmetric range per head (or one per tensor) for each
/// key / value stream, calibrated on the model as it is — with prefix_tokens before it, the prefix's keys and values are
/// constants ahead of the past, not among the calibrated tensors, so they neither enter the statistics nor get quantized.
/// The range is [min(x, 0), max(x, 0)] over the calibration tokens times a clip ratio chosen per head from a grid by the
/// mean squared error of the fake-quantized sampled tokens. Emitted as ONNX Runtime's native ops:
/// (Max/Min to the 4-bit grid →) QuantizeLinear → DequantizeLinear, uint8 zero points, per-axis scales on the head axis.
/// </summary>
internal sealed class KvStatic(int bits, bool perHead, IReadOnlyList<double> grid)
{
    /// <summary>One stream's new keys (values) to quantize: where they enter, the head size and layout.</summary>
    public sealed record Target(string Site, string What, Use Slot, long HeadDim, bool OneHeadLast, long? PastHeads);

    /// <summary>Sampled tokens (one head's d values each) and the exact range, per head of one tensor.</summary>
    private sealed class Samples
    {
        public const int MaxTokens = 4096;
        public readonly Dictionary<int, List<float[]>> Tokens = [];
        public readonly Dictionary<int, (float Lo, float Hi)> Range = [];
        public long Seen;

        public void Add(int head, ReadOnlySpan<float> token)
        {
            var list = Tokens.TryGetValue(head, out var l) ? l : Tokens[head] = [];
            if (list.Count < MaxTokens) list.Add(token.ToArray());
            var (lo, hi) = Range.TryGetValue(head, out var r) ? r : (0f, 0f);
            foreach (float v in token) { lo = Math.Min(lo, v); hi = Math.Max(hi, v); }
            Range[head] = (lo, hi);
            Seen++;
        }
    }

    private int Levels => (1 << bits) - 1;

    /// <summary>The head axis of the new keys (values) where they enter, rank 4: the source of a Transpose into the cache's
    /// [batch, heads, sequence, head size] has it where the permutation takes it from; a 3-D input is split to [b, t, heads, d].</summary>
    private static int HeadAxis(Target t) =>
        !t.OneHeadLast ? 2 : t.Slot.Node.Is("Transpose") && t.Slot.Node.GetInts("perm") is { Count: 4 } perm ? (int)perm[1] : 1;

    /// <summary>Calibrates every target and rewrites it; log lines with the chosen clip ratios and the measured errors.</summary>
    public void Run(PassContext ctx, IReadOnlyList<Target> targets, string pass)
    {
        var byTensor = new Dictionary<string, (Target T, long? Heads)>(StringComparer.Ordinal);
        var slots = targets.ToLookup(t => t.Slot.Node.Inputs[t.Slot.InputIndex]!.Name, StringComparer.Ordinal);
        foreach (var t in targets)
        {
            var x = t.Slot.Node.Inputs[t.Slot.InputIndex]!;
            // Eager / 4-D ONNX Attention: [b, heads, t, d] (heads from its static shape or the past cache's); fused 3-D: [b, t, heads·d].
            long? heads = !t.OneHeadLast ? (x.Shape is { Length: 3 } s3 && s3[2] > 0 ? s3[2] / t.HeadDim : t.PastHeads)
                : x.Shape is { Length: 4 } s && s[HeadAxis(t)] > 0 ? s[HeadAxis(t)] : t.PastHeads;
            byTensor.TryAdd(x.Name, (t, heads));
        }
        var samples = byTensor.ToDictionary(kv => kv.Key, kv => new Samples(), StringComparer.Ordinal);
        void Observe(string name, ReadOnlySpan<float> data, int channels)
        {
            if (!samples.TryGetValue(name, out var s)) return;
            var (t, heads) = byTensor[name];
            int d = (int)t.HeadDim;
            lock (s)
            {
                // One sequence per calibration sample: [1, heads, tokens, d] (head axis 1) or [1, tokens, heads, d] (axis 2).
                int h = (int)(heads ?? (t.OneHeadLast ? 1 : channels / d)), n = data.Length / d, axis = HeadAxis(t);
                for (int i = 0; i < n; i++) s.Add(!perHead ? 0 : axis == 1 ? i / (n / h) : i % h, data.Slice(i * d, d));
            }
        }
        ctx.Calibrate([.. samples.Keys], pass, Observe);
        double staticErr = 0, dynamicErr = 0;
        long count = 0;
        foreach (var (name, (t, heads)) in byTensor)
        {
            var s = samples[name];
            if (s.Seen == 0) throw new Quantc.Onnx.BadInputException($"{pass}: {t.Site} {t.What}: no calibration token reached '{name}'");
            bool axis = perHead && (heads is not null || !t.OneHeadLast);
            if (perHead && !axis)
                ctx.Log.Add($"{pass}: {t.Site} {t.What}: the head count of '{name}' is not static: one scale for the tensor");
            var chosen = s.Tokens.Keys.Order().Select(h => Choose(s.Tokens[h], s.Range[h])).ToList();
            foreach (var each in slots[name]) Emit(ctx, each, chosen);
            double e = chosen.Sum(c => c.Error), dyn = s.Tokens.Values.Sum(Dynamic);
            long n = s.Tokens.Values.Sum(l => l.Count);
            staticErr += e; dynamicErr += dyn; count += n;
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"{pass}: {t.Site} {t.What} int{bits} static {(axis ? $"per head ({chosen.Count})" : "per tensor")}: scales " +
                $"[{string.Join(" ", chosen.Select(c => $"{c.Scale:0.###e0}"))}], " +
                $"clip ratios [{string.Join(" ", chosen.Select(c => $"{c.Ratio:0.##}"))}]" +
                $" (range over {s.Seen} token-head vectors); MSE on {n} sampled vectors {e / n / t.HeadDim:0.###e0} (unclipped " +
                $"{chosen.Sum(c => c.Unclipped) / n / t.HeadDim:0.###e0}; dynamic per token and head {dyn / n / t.HeadDim:0.###e0})"));
        }
        if (count > 0)
            ctx.Log.Add(string.Create(CultureInfo.InvariantCulture,
                $"{pass}: static scales on {byTensor.Count} streams: summed squared error on the sampled tokens {staticErr:0.###e0} vs " +
                $"{dynamicErr:0.###e0} with dynamic per-token-and-head scales ({staticErr / Math.Max(dynamicErr, 1e-30):0.##}×)"));
    }

    private sealed record Choice(double Ratio, float Lo, float Hi, float Scale, byte Zero, double Error, double Unclipped);

    /// <summary>The clip ratio of the grid whose static range gives the least squared error on the tokens.</summary>
    private Choice Choose(List<float[]> tokens, (float Lo, float Hi) range)
    {
        Choice? best = null;
        double unclipped = double.NaN;
        foreach (double r in grid.Append(1.0).Distinct())
        {
            var (lo, hi, s, z) = Grid(range.Lo * r, range.Hi * r);
            double e = 0;
            foreach (var tok in tokens)
                foreach (float v in tok) { double q = Fake(v, s, z); e += (v - q) * (v - q); }
            if (r == 1.0) unclipped = e;
            if (best is null || e < best.Error) best = new Choice(r, lo, hi, s, z, e, 0);
        }
        return best! with { Unclipped = unclipped };
    }

    private (float Lo, float Hi, float Scale, byte Zero) Grid(double lo, double hi)
    {
        lo = Math.Min(lo, 0); hi = Math.Max(hi, 0);
        float s = (float)Math.Max((hi - lo) / Levels, 1e-12);
        byte z = (byte)Math.Clamp(Math.Round(-lo / s, MidpointRounding.ToEven), 0, Levels);
        return ((float)lo, (float)hi, s, z);
    }

    private double Fake(float v, float s, byte z) => (Math.Clamp(Math.Round(v / s, MidpointRounding.ToEven) + z, 0, Levels) - z) * s;

    /// <summary>Squared error of per-token asymmetric quantization (quantize_kv's dynamic scales) on the tokens.</summary>
    private double Dynamic(List<float[]> tokens)
    {
        double e = 0;
        foreach (var tok in tokens)
        {
            var (_, _, s, z) = Grid(tok.Min(), tok.Max());
            foreach (float v in tok) { double q = Fake(v, s, z); e += (v - q) * (v - q); }
        }
        return e;
    }

    /// <summary>x → [Max/Min to the 4-bit grid →] QuantizeLinear → DequantizeLinear with the chosen scales, per head on the head axis
    /// or one per tensor.</summary>
    private void Emit(PassContext ctx, Target t, List<Choice> chosen)
    {
        var g = ctx.Model.Graph;
        var x = t.Slot.Node.Inputs[t.Slot.InputIndex]!;
        var e = new Emitter(g, t.Slot.Node, g.UniqueName($"{t.Site}/{t.What}_static_q{bits}"));
        Value xs = t.OneHeadLast ? x : e.Reshape(x, [0, 0, -1, t.HeadDim], "/split");
        int h = chosen.Count;
        long[] dims = h == 1 ? [] : [h];
        int axis = HeadAxis(t);
        long[] broadcast = h == 1 ? [] : [1, axis == 1 ? h : 1, axis == 2 ? h : 1, 1];
        Value Floats(string suffix, long[] shape, IEnumerable<float> v) =>
            g.AddInitializer(Tensor.FromFloats(e.Name(suffix), shape, v.ToArray()));
        var scale = Floats("_scale", dims, chosen.Select(c => c.Scale));
        var zero = g.AddInitializer(Tensor.FromValues(e.Name("_zero_point"), (int)DT.Uint8, dims,
            (ReadOnlySpan<byte>)chosen.Select(c => c.Zero).ToArray()));
        Value src = xs;
        if (bits < 8)
        {
            // The 4-bit grid on uint8 storage: x clipped to [(0 − z)·s, (levels − z)·s] first, per head.
            src = e.Op("Max", "_grid_lo", src, Floats("_lo", broadcast, chosen.Select(c => -c.Zero * c.Scale)));
            src = e.Op("Min", "_grid_hi", src, Floats("_hi", broadcast, chosen.Select(c => (Levels - c.Zero) * c.Scale)));
        }
        var q = e.Node("QuantizeLinear", "_q", src, scale, zero);
        var dq = e.Node("DequantizeLinear", "_dq", q.Output, scale, zero);
        if (h > 1) { q.SetAttribute("axis", (long)axis); dq.SetAttribute("axis", (long)axis); }
        Value y = t.OneHeadLast ? dq.Output : e.Reshape(dq.Output, [0, 0, -1], "/merge");
        ctx.Provenance.Record(y.Name, x.Name);
        t.Slot.Node.SetInput(t.Slot.InputIndex, y);
    }
}
