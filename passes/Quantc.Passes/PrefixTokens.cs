using Microsoft.ML.OnnxRuntime;
using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Building;
using Quantc.Onnx;
using System.Text.RegularExpressions;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// PrefixQuant (Chen et al. 2024): a few tokens (BOS, delimiters) carry token-wise outliers hundreds of times the median
/// and act as attention sinks; with them at the start of the context, later tokens are outlier-free. The pass finds
/// them from calibration (<see cref="PrefixOutliers"/>: per linear input, per token max |x| over η × the median token
/// max; o = ⌈max over inputs of the mean outlier count per sample after position 0⌉; prefix = the first token (BOS)
/// plus the o most frequent outlier token ids), runs the float model once on the prefix and stores each layer's
/// prefix keys and values as initializers. The rewritten graph puts them ahead of the past cache, extends the
/// attention mask by o ones, offsets the position ids by o and slices the prefix off the present outputs: the model's
/// inputs and outputs keep their names, shapes and meaning (a cache it writes can be fed back to it), and its function on
/// x is the original's on [prefix, x]. Calibration after it sees x with the prefix in context and never the prefix's
/// own activations (they are constants), which is what static per-tensor ranges need. Needs every attention's key
/// and value cache streams in the model map (eager attention, GroupQueryAttention, MultiHeadAttention, ONNX Attention —
/// before or after fuse_attention: the prefix goes ahead of past_key / past_value either way), the past and
/// present caches [batch, heads, sequence, head size], and an <c>attention_mask</c> input.
/// </summary>
public sealed class PrefixTokensPass(double eta, int maxTokens, IReadOnlyList<double> tokens, IReadOnlyList<string> layers,
    bool detectOnly, int bos = -1) : IPass
{
    public static readonly PassInfo Info = PassInfo.Of<PrefixTokensOptions>("prefix_tokens", PassKind.FunctionPreserving,
        "PrefixQuant: outlier tokens found from calibration, their keys/values prefixed in the KV cache as constants",
        o => new PrefixTokensPass(o.Eta, o.MaxTokens, o.Tokens, o.Layers, o.DetectOnly, o.Bos));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        bool Matches(string layer) => layers.Any(p => Regex.IsMatch(layer, p));
        List<long> prefix;
        PrefixOutliers? before = null;
        if (tokens.Count > 0)
        {
            prefix = [.. tokens.Select(t => (long)t)];
            ctx.Log.Add($"prefix_tokens: prefix given by the recipe: [{string.Join(", ", prefix)}]");
        }
        else
        {
            before = PrefixOutliers.Measure(ctx, Name, eta, Matches);
            if (before.Sites.Count == 0) throw new BadInputException("prefix_tokens: no linear layer matches 'layers' " +
                $"({string.Join(", ", layers)}): nothing to measure outlier tokens at");
            ctx.Log.AddRange(before.Describe(Name, "before", eta));
            prefix = Choose(ctx, before);
        }
        if (detectOnly) { ctx.Log.Add("prefix_tokens: detect_only — the graph is unchanged"); return; }
        if (prefix.Count == 0) return;
        Inject(ctx, prefix);
        if (before is not null)
        {
            var after = PrefixOutliers.Measure(ctx, Name, eta, Matches);
            ctx.Log.AddRange(after.Describe(Name, "after", eta));
            ctx.Log.Add($"prefix_tokens: largest token max / median before the prefix {before.Worst!.TopRatio:0.#}× " +
                $"({before.Worst.Layer}), after {after.Worst?.TopRatio ?? 0:0.#}× ({after.Worst?.Layer}); " +
                $"outliers per sample after position 0: {before.Sites.Max(s => s.MeanLaterOutliers):0.##} → " +
                $"{after.Sites.Select(s => s.MeanLaterOutliers).DefaultIfEmpty(0).Max():0.##}");
        }
    }

    /// <summary>BOS (the first token every sample starts with) plus the o most frequent outlier tokens after position 0.</summary>
    private List<long> Choose(PassContext ctx, PrefixOutliers m)
    {
        var worst = m.Worst!;
        int o = m.PrefixCount;
        long? first = bos >= 0 ? bos : TokenizerBos(ctx.Model) ?? m.FirstToken;
        var frequent = m.FrequentTokens().Where(t => t.Token != first).ToList();
        var prefix = new List<long>();
        if (first is { } b) prefix.Add(b);
        var picked = frequent.Take(Math.Min(o, maxTokens)).ToList();
        prefix.AddRange(picked.Select(t => t.Token));
        bool firstIsOutlier = m.Sites.Any(s => s.Positions.ContainsKey(0));
        if (o == 0 && !firstIsOutlier)
        {
            ctx.Notice($"prefix_tokens: no outlier token (> {eta:0.##}× the median token max) in {m.SampleCount} samples; largest ratio " +
                $"{worst.TopRatio:0.#}× ({worst.Layer}, token {worst.TopToken} at position {worst.TopPosition}); " +
                (detectOnly ? "detect_only" : first is null ? "no BOS either: the graph is unchanged" : $"prefixing BOS {first} alone"));
            if (first is null) return [];
        }
        string capped = o > maxTokens ? $" (o = {o} capped at max_tokens {maxTokens})" : "";
        string head = first is { } f ? $"BOS {f}{(firstIsOutlier ? " (position 0 is an outlier)" : "")} + " : "";
        ctx.Log.Add($"prefix_tokens: o = {o}{capped}: prefix [{string.Join(", ", prefix)}] = {head}" +
            $"{(picked.Count == 0 ? "no other token" : string.Join(", ", picked.Select(t => $"{t.Token} ({t.Count} outliers)")))}; " +
            $"largest ratio {worst.TopRatio:0.#}× at {worst.Layer}");
        return prefix;
    }

    /// <summary>The BOS of the model's tokenizer (the byte tokenizer's, or tokenizer.model / tokenizer.json beside it), null when
    /// none.</summary>
    private static long? TokenizerBos(Model model)
    {
        try { return Quantc.Core.Data.DataLoader.TokenizerFor(model).Bos; }
        catch (BadInputException) { return null; }
    }

    /// <summary>One attention layer's caches: the past input and present output of its keys and of its values.</summary>
    private sealed record Caches(string Site, string PastKey, string PresentKey, string PastValue, string PresentValue);

    private static List<Caches> CachesOf(PassContext ctx)
    {
        var sites = ctx.Map.Attention;
        if (sites.Count == 0)
            throw new BadInputException("prefix_tokens: no attention with a KV cache in the model map (eager attention, " +
                "GroupQueryAttention, MultiHeadAttention or ONNX Attention); the prefix has nowhere to go");
        var list = new List<Caches>();
        foreach (var a in sites)
        {
            static (string Past, string Present) One(AttentionSite a, CacheStream? s, string? why, string what) =>
                s is null ? throw new BadInputException($"prefix_tokens: {a.Name} ({a.Form}): no {what} cache stream: {why}")
                : s.CacheInputs is not [var p] ? throw new BadInputException(
                    $"prefix_tokens: {a.Name} ({a.Form}): {s.CacheInputs.Count} past {what} inputs (want exactly one)")
                : s.CacheOutputs is not [var o] ? throw new BadInputException(
                    $"prefix_tokens: {a.Name} ({a.Form}): {s.CacheOutputs.Count} present {what} outputs (want exactly one)")
                : (p, o);
            var (pk, ok) = One(a, a.Keys, a.KeysWhy, "key");
            var (pv, ov) = One(a, a.Values, a.ValuesWhy, "value");
            list.Add(new Caches(a.Name, pk, ok, pv, ov));
        }
        return list;
    }

    private void Inject(PassContext ctx, List<long> prefix)
    {
        var g = ctx.Model.Graph;
        var caches = CachesOf(ctx);
        var mask = g.Inputs.FirstOrDefault(v => v.Name == "attention_mask" && !v.IsInitializer) ?? throw new BadInputException(
            "prefix_tokens: the model has no 'attention_mask' input, so the prefix cannot be made visible to the input tokens");
        foreach (var c in caches)
            foreach (var name in new[] { c.PastKey, c.PastValue })
                if (g[name].Shape is not { Length: 4 })
                    throw new BadInputException($"prefix_tokens: {c.Site}: past '{name}' is not [batch, heads, sequence, head size]");
        var positions = g.Inputs.FirstOrDefault(v => v.Name == "position_ids" && !v.IsInitializer);
        var kv = RunPrefix(ctx, prefix, caches);
        long o = prefix.Count;

        // The batch size, read from the attention mask [batch, total].
        var head = new Emitter(g, g.Nodes.FirstOrDefault(), "prefix_tokens/");
        var shape = head.Node("Shape", "mask_shape", mask);
        shape.SetAttribute("end", 1L);
        var batch = shape.Output;
        var ones = g.AddInitializer(mask.ElementType == (int)DT.Int32
            ? Tensor.FromValues<int>(g.UniqueName("prefix_tokens/mask_ones"), (int)DT.Int32, [1, o], Enumerable.Repeat(1, (int)o).ToArray())
            : Tensor.FromValues<long>(g.UniqueName("prefix_tokens/mask_ones"), (int)DT.Int64, [1, o],
                Enumerable.Repeat(1L, (int)o).ToArray()));
        var maskBroadcast = head.Op("Concat", "mask_expand_shape", batch, head.Int64s("one", 1));
        maskBroadcast.Producer!.SetAttribute("axis", 0L);
        var prefixMask = head.Op("Expand", "mask_prefix", ones, maskBroadcast);
        var fullMask = head.Node("Concat", "mask", prefixMask, mask);
        fullMask.SetAttribute("axis", 1L);
        g.ReplaceAllUses(mask, fullMask.Output, except: shape);
        fullMask.SetInput(1, mask);
        if (positions is not null)
        {
            var off = g.AddInitializer(positions.ElementType == (int)DT.Int32
                ? Tensor.FromValues<int>(g.UniqueName("prefix_tokens/position_offset"), (int)DT.Int32, [], [(int)o])
                : Tensor.FromValues<long>(g.UniqueName("prefix_tokens/position_offset"), (int)DT.Int64, [], [o]));
            var shifted = head.Op("Add", "positions", positions, off);
            g.ReplaceAllUses(positions, shifted);
            shifted.Producer!.SetInput(0, positions);
        }
        var cacheShape = head.Op("Concat", "cache_expand_shape", batch, head.Int64s("ones3", 1, 1, 1));
        cacheShape.Producer!.SetAttribute("axis", 0L);
        var starts = head.Int64s("slice_starts", o);
        var ends = head.Int64s("slice_ends", long.MaxValue);
        var axes = head.Int64s("slice_axes", 2);
        foreach (var c in caches)
            foreach (var (past, present) in new[] { (c.PastKey, c.PresentKey), (c.PastValue, c.PresentValue) })
            {
                var p = g[past];
                var (data, dims) = kv[present];
                var init = g.AddInitializer(Tensor.FromFloats(g.UniqueName($"prefix_tokens.{past}"), dims, data));
                var e = new Emitter(g, g.Nodes.FirstOrDefault(), $"prefix_tokens/{past}/");
                var expanded = e.Op("Expand", "expand", init, cacheShape);
                var cat = e.Node("Concat", "concat", expanded, p);
                cat.SetAttribute("axis", 2L);
                g.ReplaceAllUses(p, cat.Output, except: cat);
                // The present output: the cache with the prefix, sliced after it under the output's own name.
                var full = g[present];
                var slots = Enumerable.Range(0, g.Outputs.Count).Where(i => ReferenceEquals(g.Outputs[i], full)).ToList();
                g.RenameValueUnique(full, present + "_with_prefix");
                // Right after the cache's producer, not at the graph's end: a model run in segments keeps each value until its
                // last reader, and slices at the end kept every layer's full cache to the last segment (calibration of the 1b
                // model grew by ~40 MiB per segment).
                int at = full.Producer is { } producer ? g.Nodes.ToList().IndexOf(producer) + 1 : 0;
                var slice = new Emitter(g, at < g.Nodes.Count ? g.Nodes[at] : null, $"prefix_tokens/{present}").NodeOf("Slice", "/slice",
                    [full, starts, ends, axes], outputNames: [present]);
                slice.Output.Type = full.Type;
                full.Type = null;
                foreach (int i in slots) g.SetOutput(i, slice.Output);
            }
        g.SortTopologically();
        MarkTransformed(ctx, g, mask, positions, caches);
        ctx.Model.SetMetadata(Quantc.Core.Verification.PrefixAlignment.Key, string.Join(",", prefix));
        ctx.Log.Add($"prefix_tokens: {prefix.Count} prefix tokens [{string.Join(", ", prefix)}] in the KV cache of {caches.Count} " +
            $"attention layers (keys/values as initializers {string.Join(", ", kv.Values.First().Dims)}); attention mask extended, " +
            (positions is null ? "no position_ids input (positions follow the cache length)" : "position ids offset by " + o) +
            ", present outputs sliced after the prefix");
    }

    /// <summary>
    /// Every tensor downstream of the mask, the positions or a past cache now carries the values of the original on
    /// [prefix, x] (and the mask and caches are longer): recorded as transformed, so verify does not compare them with
    /// the original's on x.
    /// </summary>
    private static void MarkTransformed(PassContext ctx, Graph g, Value mask, Value? positions, List<Caches> caches)
    {
        var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Value>(caches.SelectMany(c => new[] { g[c.PastKey], g[c.PastValue] }).Append(mask));
        if (positions is not null) stack.Push(positions);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            foreach (var u in v.Uses)
                foreach (var o in u.Node.Outputs)
                    if (o is not null && seen.Add(o))
                    {
                        if (!o.IsGraphOutput) ctx.Provenance.RecordTransformed(o.Name, "prefix");
                        stack.Push(o);
                    }
        }
    }

    /// <summary>The float model's present keys and values on the prefix alone (empty past). A model past the calibration's segment
    /// budget runs in segments, as calibration does (a whole-model session of the 1b reference model peaked at 4 GB here).</summary>
    private static Dictionary<string, (float[] Data, long[] Dims)> RunPrefix(PassContext ctx, List<long> prefix, List<Caches> caches)
    {
        var model = ctx.Model;
        var sample = CalibrationInputs.FromTokens(model.Graph, prefix.ToArray());
        var names = caches.SelectMany(c => new[] { c.PresentKey, c.PresentValue }).ToList();
        var d = new Dictionary<string, (float[], long[])>(StringComparer.Ordinal);
        void Keep(string name, OrtValue value)
        {
            var info = value.GetTensorTypeAndShape();
            if (info.ElementDataType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                throw new BadInputException($"prefix_tokens: present '{name}' is {info.ElementDataType}, not float32");
            var kept = (value.GetTensorDataAsSpan<float>().ToArray(), info.Shape);
            lock (d) d[name] = kept;
        }
        if (SegmentedRun.Plan(model, (ctx.CalibrationOptions ?? new CalibrationOptions()).SegmentBytes) is { } segments)
        {
            SegmentedRun.Run(model, segments, names, [sample], (name, value, _) => Keep(name, value));
            return d;
        }
        using var session = OrtModel.CreateSession(model);
        var inputs = CalibrationInputs.ToOrt(sample);
        try
        {
            using var outs = OrtModel.Run(session, inputs, names, "model on the prefix");
            for (int i = 0; i < names.Count; i++) Keep(names[i], outs[i]);
            return d;
        }
        finally
        {
            foreach (var (_, v) in inputs) v.Dispose();
        }
    }
}

/// <summary>The options of <see cref="PrefixTokensPass"/>.</summary>
public sealed record PrefixTokensOptions : PassOptions
{
    [Option("a token is an outlier when its largest |x| exceeds eta × the median token's", Min = 1)]
    public double Eta { get; init; } = 64;

    [Option("most outlier tokens prefixed after the first token", Min = 0, Max = 64)]
    public int MaxTokens { get; init; } = 4;

    [Option("the prefix token ids (no detection); empty: detect from calibration")]
    public IReadOnlyList<double> Tokens { get; init; } = [];

    [Option("linear layers whose inputs are measured", Regex = true)]
    public IReadOnlyList<string> Layers { get; init; } = [".*"];

    [Option("the prefix's first token (BOS); -1: the tokenizer's BOS, else the token every calibration sample starts with", Min = -1)]
    public int Bos { get; init; } = -1;

    [Option("report the outlier tokens only, leave the graph unchanged")]
    public bool DetectOnly { get; init; }

    public override string? Check()
    {
        foreach (double t in Tokens)
            if (t < 0 || t != Math.Floor(t) || t > int.MaxValue) return $"parameter 'tokens': {t} is not a token id (an integer ≥ 0)";
        return null;
    }
}
