using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// QuantizeKv: KV-cache quantization as QuaRot does it — the keys and values computed each step are
/// fake-quantized before they enter the cache (and the attention): asymmetric, per token and per head
/// (group = head_dim), <c>bits</c> 8 or 4, range [min(x, 0), max(x, 0)]·<c>clip_ratio</c>,
/// s = (hi − lo)/(2^bits − 1), z = round(−lo/s), x̂ = (clip(round(x/s) + z, 0, 2^bits − 1) − z)·s — in
/// standard float ops (ReduceMin/ReduceMax/Round/Clip; ONNX's QuantizeLinear has no dynamic per-group
/// scales), so the cache holds exactly the dequantized grid values a real int4/int8 cache would give back.
/// The past is taken as already quantized (it was, when this model produced it). Run after
/// <c>rotate_qk</c> to quantize the rotated keys (QuaRot's R3 + KV4). With <c>symmetric</c> (FireQ's INT4 cache) the grid is
/// symmetric instead: s = absmax/(2^(bits−1) − 1) per token and head, rounded to a float8 e4m3fn value with <c>fp8_scales</c>
/// (floored at 2^-9 so that an all-zero group stays zero), x̂ = clip(round(x/s), −2^(bits−1), 2^(bits−1) − 1)·s; <c>fp8_queries</c>
/// also rounds the queries to float8 e4m3fn per token and head (scale absmax/448), as FireQ's FP8 attention reads them.
/// With <c>static_scales</c> (PrefixQuant's static KV cache) the scales are constants calibrated per head (or per tensor) instead,
/// the clip ratio searched per head (<see cref="KvStatic"/>), lowered to QuantizeLinear / DequantizeLinear. With <c>format</c>
/// <c>fp8</c> or <c>fp8_expanded</c> the cache is float8 e4m3fn per token and head instead of an integer grid: plain absmax
/// scaling, or COAT's dynamic range expansion (<see cref="KvFp8.Float8"/>). ONNX Runtime's attention reads float32 caches, so every
/// cache format here is simulated: the graph's cache holds exactly the values a real cache of that format would give back, in
/// float32 (the memory saving is the format's, not realised by ONNX Runtime) — except with <c>storage: native</c>
/// (<see cref="KvNative"/>): com.microsoft GroupQueryAttention's past/present themselves become int8 (or uint8 with two 4-bit
/// values per byte) that ONNX Runtime quantizes into and reads back, with static symmetric scales per KV head and channel (or
/// per tensor) calibrated here. Not function-preserving.
/// </summary>
public sealed class QuantizeKvPass(int bits, double clipRatio, bool keys, bool values, bool symmetric = false, bool fp8Scales = false,
    bool fp8Queries = false, bool staticScales = false, bool perHead = true, IReadOnlyList<double>? clipGrid = null,
    string format = "int", string storage = "simulated", bool perChannel = true) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<QuantizeKvOptions>("quantize_kv", PassKind.Lowering,
        "KV-cache quantization: new keys and values fake-quantized before the cache, asymmetric per token and head; or (storage: " +
        "native) GroupQueryAttention's cache stored as int8 / packed int4 with calibrated static scales",
        o => new QuantizeKvPass(o.Bits, o.ClipRatio, o.Keys, o.Values, o.Symmetric, o.Fp8Scales, o.Fp8Queries, o.StaticScales, o.PerHead,
            o.ClipGrid, o.Format, o.Storage, o.PerChannel));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var sites = ctx.Map.Attention;
        if (sites.Count == 0)
            { ctx.Log.Add("quantize_kv: no attention found (eager MatMul/Softmax/MatMul, GroupQueryAttention or " +
            "MultiHeadAttention)"); return; }
        if (storage == "native") { RunNative(ctx, sites); return; }
        // Cast to float8 with saturate needs opset 19 (lower_qdq's 21, as the rest of the compile ends up with).
        if ((fp8Scales || fp8Queries || format != "int") && (ctx.Model.OpsetVersion("") ?? 0) < 21) ctx.Model.SetOpset("", 21);
        var statics = new List<KvStatic.Target>();
        foreach (var a in sites)
        {
            var done = new List<string>();
            void Quantize(string what, CacheStream? s, string? why)
            {
                if (s is null || a.HeadDim is null)
                    { ctx.Log.Add($"quantize_kv: {a.Name} ({a.Form}) {what} skipped: {why ?? "head size unknown"}"); return; }
                foreach (var src in s.Sources)
                    if (staticScales) statics.Add(new KvStatic.Target(a.Name, what, src, a.HeadDim.Value, s.OneHeadLast, PastHeads(g, s)));
                    else FakeQuantize(ctx, g, src, a.HeadDim.Value, s.OneHeadLast, $"{a.Name}/{what}_{Suffix}");
                if (s.CacheInputs.Any(p => g[p].Uses.Any(u => PrefixCache.PastBehind(u.Node.Output) is not null)))
                    ctx.Log.Add($"quantize_kv: {a.Name} {what}: the prefix's constant {what} (prefix_tokens) stay float32");
                done.Add(what);
            }
            if (keys)
            {
                // GroupQueryAttention with do_rotary applies RoPE to its key input inside: what enters the cache is not what it reads.
                if (a.RopeInside is not null) ctx.Log.Add($"quantize_kv: {a.Name} ({a.Form}) keys skipped: {a.RopeInside}");
                else Quantize("keys", a.Keys, a.KeysWhy);
            }
            if (values) Quantize("values", a.Values, a.ValuesWhy);
            if (fp8Queries && a.HeadDim is { } qd)
            {
                if (a.RopeInside is not null) ctx.Log.Add($"quantize_kv: {a.Name} ({a.Form}) queries skipped: {a.RopeInside}");
                else { KvFp8.Queries(ctx, g, a.Query, qd, a.QueryOneHeadLast, $"{a.Name}/query_fp8"); done.Add("queries float8"); }
            }
            if (done.Count > 0 && format != "int")
                ctx.Log.Add($"quantize_kv: {a.Name} ({a.Form}): {string.Join(" and ", done)} {FormatText(a.HeadDim!.Value)}");
            else if (done.Count > 0 && !staticScales)
                ctx.Log.Add($"quantize_kv: {a.Name} ({a.Form}): {string.Join(" and ", done)} int{bits} " +
                    $"{(symmetric ? $"symmetric{(fp8Scales ? " (float8 scales)" : "")}" : "asymmetric")} per token and head " +
                    $"({a.HeadDim}){(clipRatio < 1 ? $", clip ratio {clipRatio:0.###}" : "")}");
        }
        if (statics.Count > 0) new KvStatic(bits, perHead, clipGrid ?? [1.0]).Run(ctx, statics, Name);
    }

    // storage: native — every GroupQueryAttention whose cache can be stored as integers; the others are named with the reason.
    private void RunNative(PassContext ctx, List<AttentionSite> sites)
    {
        var native = new KvNative(bits, perChannel, clipGrid ?? [1.0]);
        var eligible = new List<AttentionSite>();
        foreach (var a in sites)
            if (native.Why(ctx.Model.Graph, a) is { } why)
                ctx.Notice($"quantize_kv: {a.Name} ({a.Form}): cache left as it is (storage native): {why}");
            else eligible.Add(a);
        if (eligible.Count == 0)
            { ctx.Notice($"quantize_kv: storage native: none of the {sites.Count} attention(s) can store its cache as integers"); return; }
        native.Run(ctx, eligible, Name);
    }

    private string Suffix => format == "int" ? $"q{bits}" : format;

    // What a float8 cache is and what it would hold per value (codes plus the per-group fields: a float32 scale, or COAT's max and
    // exponent), next to float32's 4 bytes; the graph keeps the decoded values in float32.
    private string FormatText(long d)
    {
        bool expand = format == "fp8_expanded";
        double perValue = 1 + (expand ? 8.0 : 4.0) / d;
        return $"float8 e4m3fn per token and head ({d}){(expand ? " with COAT's dynamic range expansion (max and k per group)" : "")}: " +
            $"{perValue:0.###} bytes per value in a real cache; simulated — ONNX Runtime's attention reads the decoded values from a " +
            "float32 cache";
    }

    /// <summary>The head count of the stream's past cache [batch, heads, past, head size] when static, else null.</summary>
    private static long? PastHeads(Graph g, CacheStream s) =>
        s.CacheInputs is [var p, ..] && g[p].Shape is { Length: 4 } shape && shape[1] > 0 ? shape[1] : null;

    private void FakeQuantize(PassContext ctx, Graph g, Use slot, long d, bool oneHeadLast, string prefix)
    {
        var x = slot.Node.Inputs[slot.InputIndex]!;
        var before = slot.Node;
        var e = new Emitter(g, before, g.UniqueName(prefix));
        Value Op(string op, string suffix, params Value[] inputs) => e.Op(op, suffix, inputs);
        Value F(string suffix, float v) => e.Float(suffix, v);
        Value xs = oneHeadLast ? x : e.Reshape(x, [0, 0, -1, d], "/split");
        if (format != "int")
        {
            Value yf = KvFp8.Float8(e, xs, format == "fp8_expanded");
            if (!oneHeadLast) yf = e.Reshape(yf, [0, 0, -1], "/merge");
            ctx.Provenance.Record(yf.Name, x.Name);
            slot.Node.SetInput(slot.InputIndex, yf);
            return;
        }
        if (symmetric)
        {
            Value yq = KvFp8.Symmetric(e, xs, bits, clipRatio, fp8Scales);
            if (!oneHeadLast) yq = e.Reshape(yq, [0, 0, -1], "/merge");
            ctx.Provenance.Record(yq.Name, x.Name);
            slot.Node.SetInput(slot.InputIndex, yq);
            return;
        }
        var axes = e.Int64s("_axes", -1L);
        Value Reduce(string op) => e.ReduceLast(op, "_" + op, xs, axes);
        var zero = F("_zero", 0f);
        Value lo = Op("Min", "_lo", Reduce("ReduceMin"), zero), hi = Op("Max", "_hi", Reduce("ReduceMax"), zero);
        if (clipRatio < 1)
        {
            var c = F("_clip_ratio", (float)clipRatio);
            lo = Op("Mul", "_lo_clip", lo, c);
            hi = Op("Mul", "_hi_clip", hi, c);
        }
        float maxq = (1 << bits) - 1;
        var scale = Op("Max", "_scale", Op("Div", "_range", Op("Sub", "_width", hi, lo), F("_levels", maxq)), F("_eps", 1e-12f));
        var zp = Op("Round", "_zp", Op("Div", "_zp_div", Op("Neg", "_neg_lo", lo), scale));
        var q = Op("Clip", "_clip", Op("Add", "_shift", Op("Round", "_round", Op("Div", "_div", xs, scale)), zp), zero, F("_maxq", maxq));
        Value y = Op("Mul", "_dq", Op("Sub", "_unshift", q, zp), scale);
        if (!oneHeadLast) y = e.Reshape(y, [0, 0, -1], "/merge");
        ctx.Provenance.Record(y.Name, x.Name);
        slot.Node.SetInput(slot.InputIndex, y);
    }
}

/// <summary>The options of <see cref="QuantizeKvPass"/>.</summary>
public sealed record QuantizeKvOptions : PassOptions
{
    [Option("bits per cached value: 8 or 4")]
    public int Bits { get; init; } = 4;

    [Option("share of each group's range kept (values beyond are clipped)", Min = 0, MinExclusive = true, Max = 1)]
    public double ClipRatio { get; init; } = 1.0;

    [Option("quantize the keys")]
    public bool Keys { get; init; } = true;

    [Option("quantize the values")]
    public bool Values { get; init; } = true;

    [Option("symmetric grid per token and head (FireQ's INT4 cache) instead of asymmetric")]
    public bool Symmetric { get; init; }

    [Option("with symmetric: round the scales to float8 e4m3fn values (FireQ)")]
    public bool Fp8Scales { get; init; }

    [Option("also round the queries to float8 e4m3fn per token and head (FireQ's FP8 attention)")]
    public bool Fp8Queries { get; init; }

    [Option("static scales calibrated per head (or per tensor) instead of computed per token at run time (PrefixQuant)")]
    public bool StaticScales { get; init; }

    [Option("with static_scales: one scale per head (false: one per tensor)")]
    public bool PerHead { get; init; } = true;

    [Option("with static_scales: clip ratios tried per head (least squared error on calibration tokens wins)")]
    public IReadOnlyList<double> ClipGrid { get; init; } = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5];

    [Option("the cache's number format: int (an integer grid of 'bits'), fp8 (float8 e4m3fn, absmax scale per token and head) or " +
        "fp8_expanded (float8 with COAT's dynamic range expansion per token and head)", Choices = "int|fp8|fp8_expanded")]
    public string Format { get; init; } = "int";

    [Option("where the quantized cache lives: simulated (the graph's float32 cache holds the dequantized values; any attention) or " +
        "native (the past/present tensors themselves are int8, or uint8 with two 4-bit values per byte, in ONNX Runtime's " +
        "GroupQueryAttention: static symmetric scales calibrated here)", Choices = "simulated|native")]
    public string Storage { get; init; } = "simulated";

    [Option("with storage native: one scale per KV head and channel (false: one per tensor)")]
    public bool PerChannel { get; init; } = true;

    public override string? Check() => Storage == "native" ? CheckNative()
        : Given("per_channel") ? "per_channel is an option of storage: native"
        : Bits is not (4 or 8) ? $"parameter 'bits' = {Bits} must be 4 or 8"
        : Format != "int" && Given("bits") ? $"format {Format} is 8 bits per value: drop 'bits' (it sets the int grid's width)"
        : Format != "int" && (Symmetric || Fp8Scales || StaticScales || ClipRatio < 1)
            ? $"format {Format} has its own per token and head scaling: drop symmetric, fp8_scales, static_scales and clip_ratio"
        : Fp8Scales && !Symmetric ? "fp8_scales needs symmetric: true"
        : StaticScales && (Symmetric || Fp8Queries) ? "static_scales is asymmetric per head: drop symmetric and fp8_queries"
        : StaticScales && ClipRatio < 1 ? "static_scales searches its clip ratio (clip_grid): drop clip_ratio"
        : ClipGrid.Count == 0 || ClipGrid.Any(r => r is <= 0 or > 1) ? "parameter 'clip_grid' must list ratios in (0, 1]" : null;

    private string? CheckNative() =>
        Bits is not (4 or 8) ? $"parameter 'bits' = {Bits} must be 4 or 8"
        : Format != "int" ? $"storage native stores an integer grid: drop format {Format}"
        : !Keys || !Values ? "storage native stores keys and values alike (ONNX Runtime's GroupQueryAttention takes one quantization " +
            "for both): drop keys/values"
        : Symmetric || Fp8Scales || Fp8Queries || StaticScales || ClipRatio < 1 || Given("per_head")
            ? "storage native is static symmetric per channel (per_channel) with its clip ratio searched from clip_grid: drop " +
              "symmetric, fp8_scales, fp8_queries, static_scales, per_head and clip_ratio"
        : ClipGrid.Count == 0 || ClipGrid.Any(r => r is <= 0 or > 1) ? "parameter 'clip_grid' must list ratios in (0, 1]" : null;
}
