using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// LowerQdq: turns the plan into standard ONNX (opset 21) that ONNX Runtime fuses into integer
/// kernels: int8 weights with per-channel scales behind DequantizeLinear(axis = 1); int4 weights
/// blocked along K behind DequantizeLinear(axis = 0, block_size) — which ONNX Runtime turns into
/// MatMulNBits — or per channel behind DequantizeLinear(axis = 1) without block_size; fp16 weights behind a Cast; static activations as
/// QuantizeLinear → DequantizeLinear on
/// the layer's input (one pair per input and scale, shared by q/k/v); 6-bit grids as int8 with a Clip; float8 e4m3fn
/// weights and static activations with per-tensor scales (QDQ of FLOAT8E4M3FN; ONNX Runtime's CPU runs the MatMul in
/// float on the dequantized values, GPU builds with FP8 GEMMs can fuse it).
/// Per-token dynamic activations with 8-bit-stored weights run on the same integer kernel: each row is
/// divided by its absmax m, quantized with QuantizeLinear(scale 1 / levels, uint8 zero point 128) →
/// DequantizeLinear → MatMul (which ONNX Runtime fuses into MatMulIntegerToFloat), and the product is
/// multiplied back by m: per-token quantization with the row scale s = m / levels (s·(q·W) = (s·q)·W). ONNX Runtime has no per-row
/// activation scale in its
/// integer kernels, so this is how per-token quantization reaches them. (Left as a float fake-quantization
/// round(x / s)·s, ONNX Runtime 1.31 turns DequantizeLinear(int8 weight) → MatMul into an 8-bit MatMulNBits that
/// quantizes the activations once more, per block: 0.4 % off the plan's per-token result on a test layer.) Other
/// layers (int4 weights, Gemm with a bias C) keep the float fake-quantization.
/// </summary>
public sealed class LowerQdqPass : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<NoOptions>("lower_qdq", PassKind.Lowering,
        "emit standard ONNX QDQ (opset 21) that ONNX Runtime fuses",
        _ => new LowerQdqPass())
        with { Contract = PassContract.Lowers };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx) => LowerAll(ctx);

    /// <summary>
    /// Lowers every planned linear layer not lowered yet to QDQ and removes what became dead: the
    /// pass itself, and the tail of the lowerings that take some layers to other kernels first
    /// (lower_w4a8, lower_mamba) — they call this, not the pass.
    /// </summary>
    public static void LowerAll(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        // The model's opset stays as it is when no layer is lowered (nothing here needs opset 21 then).
        bool lowers = ctx.Map.Linears.Any(l => ctx.Plan.TryGet(l.Name, out var p)
            && (p.WeightFormat.IsReduced || p.ActivationFormat.IsReduced));
        if (lowers && Quantc.Ir.Import.OpsetConverter.Require(ctx.Model, 21) is { } raised) ctx.Log.Add($"lower_qdq: {raised.Describe()}");
        var qdqCache = new Dictionary<(Value, string, float, float), Value>();
        var rowScales = new Dictionary<Value, Value>();
        var sharedInt8 = new Dictionary<Value, List<(QuantizedWeight Q, Value Dq)>>();
        var shared = ctx.Map.Linears.GroupBy(l => l.Weight).Where(s => s.Count() > 1 && s.All(l => l.WeightTranspose is null)
            && s.Select(l => l.WeightIsOutByIn).Distinct().Count() == 1)
            .Select(s => s.Key).ToHashSet();
        foreach (var l in ctx.Map.Linears)
        {
            if (!ctx.Plan.TryGet(l.Name, out var plan)) continue;
            ctx.ReleaseLayerCopies();       // a spilled weight's values are read back per layer: collect the copies as they pile up
            var (input, weight) = (l.Node.Inputs[0], l.WeightUse.Node.Inputs[l.WeightUse.InputIndex]);
            if (ConvDynamic.Applies(l, plan)) { ConvDynamic.Lower(ctx, g, l, plan); continue; }
            if (!ReuseSharedInt8(l, plan, sharedInt8)) LowerWeight(ctx, g, l, plan);
            if (shared.Contains(l.Weight) && plan.QuantizedWeight is { } qw && l.WeightUse.Node.Inputs[l.WeightUse.InputIndex] is
                { Producer: { } p } dqv && p.Is("DequantizeLinear") && plan.WeightFormat.IsInt8Storage)
                (sharedInt8.TryGetValue(l.Weight, out var list) ? list : sharedInt8[l.Weight] = []).Add((qw, dqv));
            LowerActivation(ctx, g, l, plan, qdqCache, rowScales);
            if (l.Conv is not null) ConvQuant.LowerStatic(ctx, g, l, plan);
            else ConvQuant.LowerStaticBias(ctx, g, l, plan);
            if (!ReferenceEquals(input, l.Node.Inputs[0]) || !ReferenceEquals(weight, l.WeightUse.Node.Inputs[l.WeightUse.InputIndex]))
                plan.LoweredBy ??= Info.Name;
        }
        g.RemoveDeadCode();
    }

    /// <summary>
    /// A weight shared by several layers (the import step reports them) is stored once when the layers' int8 quantized weights are
    /// equal: this layer then reads the DequantizeLinear lowered for an earlier one. True when it did.
    /// </summary>
    private static bool ReuseSharedInt8(LinearLayer l, LayerPlan plan, Dictionary<Value, List<(QuantizedWeight Q, Value Dq)>> shared)
    {
        if (!plan.WeightFormat.IsInt8Storage || plan.QuantizedWeight is not { } q || !shared.TryGetValue(l.Weight, out var list))
            return false;
        foreach (var (other, dq) in list)
        {
            if (other.GroupSize != q.GroupSize || !other.Values.AsSpan().SequenceEqual(q.Values)
                || !other.Scales.AsSpan().SequenceEqual(q.Scales)
                || !(other.ZeroPoints ?? []).AsSpan().SequenceEqual(q.ZeroPoints ?? [])) continue;
            l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, dq);
            plan.Reasons.Add($"lower_qdq: shares the quantized weight lowered for another reader of '{l.Weight.Name}'");
            return true;
        }
        return false;
    }

    private static void LowerWeight(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan)
    {
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        if (plan.WeightFormat == NumberFormat.Fp16)
        {
            var w = l.Weight.Initializer!.ToFloat32();
            var h = w.Select(v => (Half)v).ToArray();
            var hv = g.AddInitializer(Tensor.FromValues(l.Weight.Name + "_fp16", (int)DT.Float16, l.Weight.Initializer.Dims,
                (ReadOnlySpan<Half>)h));
            var cast = new Emitter(g, l.Node, l.Name).Node("Cast", "/weight_cast", hv);
            cast.SetAttribute("to", 1L);
            l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, cast.Output);
            ctx.Provenance.Record(cast.Output.Name, l.Weight.Name);
            ctx.Provenance.Record(hv.Name, l.Weight.Name);
            return;
        }
        if (plan.QuantizedWeight is not { } q) return;
        if (plan.WeightFormat == NumberFormat.Fp8)
        {
            // float8 e4m3fn values with one scale: DequantizeLinear without axis or zero point (opset 21 accepts both for float8).
            var bytes = new byte[k * n];
            var qv8 = q.Values;
            if (l.WeightIsOutByIn) Buffer.BlockCopy(qv8, 0, bytes, 0, bytes.Length);
            else for (int c = 0; c < n; c++) for (int j = 0; j < k; j++) bytes[j * n + c] = (byte)qv8[c * k + j];
            var w8 = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_fp8", (int)DT.Float8E4M3Fn, l.WeightIsOutByIn ? [n, k] : [k, n],
                bytes));
            var s8 = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_scale", [], [q.Scales[0]]));
            var dq8 = new Emitter(g, l.Node, l.Name).Node("DequantizeLinear", "/weight_dq", w8, s8);
            l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, dq8.Output);
            ctx.Provenance.Record(dq8.Output.Name, l.Weight.Name);
            ctx.Provenance.Record(w8.Name, l.Weight.Name);
            return;
        }
        // MatMul weights are [K, N] (values transposed from our [N, K], per-channel scales along axis 1, int4
        // blocks along axis 0); a Gemm with transB = 1 keeps [N, K] (scales along axis 0, blocks along axis 1).
        bool nk = l.WeightIsOutByIn;
        bool int4 = plan.WeightFormat == NumberFormat.Int4;
        var vals = new sbyte[k * n];
        var qv = q.Values;
        if (l.Conv is { Transposed: true })   // [in, out, k…], per-channel scales along axis 1
            for (int c = 0; c < n; c++) for (int j = 0; j < k; j++) vals[Weights.ConvTransposeIndex(l, c, j)] = qv[c * k + j];
        else if (nk) Array.Copy(qv, vals, vals.Length);
        else Transposition.Bytes(qv, vals, n, k);
        long[] dims = l.Conv is { } conv ? conv.WeightDims : nk ? [n, k] : [k, n];
        Value wq, scale, zp;
        Node dq;
        if (int4)
        {
            var packed = Nibbles.Pack(vals);
            wq = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_int4", (int)DT.Int4, dims, packed));
            if (q.GroupSize == 0)
            {
                var perChannel = Int4PerChannel(g, l, q, wq, nk);
                l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, perChannel.Output);
                ctx.Provenance.Record(perChannel.Output.Name, l.Weight.Name);
                ctx.Provenance.Record(wq.Name, l.Weight.Name);
                return;
            }
            int groups = k / q.GroupSize;
            // Ours: [N, groups]. MatMul's: [groups, N].
            var sc = new float[groups * n];
            var zs = new sbyte[groups * n];
            for (int c = 0; c < n; c++)
                for (int gi = 0; gi < groups; gi++)
                {
                    int at = nk ? c * groups + gi : gi * n + c;
                    sc[at] = q.Scales[c * groups + gi];
                    zs[at] = q.ZeroPoints?[c * groups + gi] ?? 0;
                }
            scale = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_scale", nk ? [n, groups] : [groups, n], sc));
            var zpPacked = Nibbles.Pack(zs);
            zp = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_zero_point", (int)DT.Int4, nk ? [n, groups] : [groups, n], zpPacked));
            dq = new Emitter(g, l.Node, l.Name).Node("DequantizeLinear", "/weight_dq", wq, scale, zp);
            dq.SetAttribute("axis", nk ? 1L : 0L);
            dq.SetAttribute("block_size", (long)q.GroupSize);
        }
        else
        {
            if (q.GroupSize != 0)
                throw new Quantc.Onnx.BadInputException($"lower_qdq: {l.Name}: per-group int8 weights are not lowered (use granularity: " +
                $"per_channel)");
            wq = g.AddInitializer(Tensor.FromValues(l.Weight.Name + "_int8", (int)DT.Int8, dims, (ReadOnlySpan<sbyte>)vals));
            if (l.Conv is { Transposed: true, Group: > 1 } grouped)
            {
                dq = GroupedConvTransposeDq(g, l, grouped, q, wq);
                l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, dq.Output);
                ctx.Provenance.Record(dq.Output.Name, l.Weight.Name);
                ctx.Provenance.Record(wq.Name, l.Weight.Name);
                return;
            }
            scale = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_scale", [n], q.Scales));
            zp = g.AddInitializer(Tensor.FromValues(l.Weight.Name + "_zero_point", (int)DT.Int8, [n],
                (ReadOnlySpan<sbyte>)(q.ZeroPoints ?? new sbyte[n])));
            dq = new Emitter(g, l.Node, l.Name).Node("DequantizeLinear", "/weight_dq", wq, scale, zp);
            dq.SetAttribute("axis", nk ? 0L : 1L);
        }
        l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, dq.Output);
        ctx.Provenance.Record(dq.Output.Name, l.Weight.Name);
        ctx.Provenance.Record(wq.Name, l.Weight.Name); // the stored integer weight stands for the float one (diff matches them)
    }

    /// <summary>
    /// A grouped ConvTranspose's int8 weight [in, out/group, k…]: axis 1 holds only out/group channels, so its per-output-channel scales
    /// are a blocked DequantizeLinear along axis 0 (blocks of in/group input channels: one block per group), the scale and zero point
    /// [group, out/group, k…] holding output channel gi · out/group + oc's at every kernel position.
    /// </summary>
    private static Node GroupedConvTransposeDq(Graph g, LinearLayer l, ConvInfo c, QuantizedWeight q, Value wq)
    {
        long[] dims = [c.Group, .. c.WeightDims.Skip(1)];
        int perGroupOut = (int)c.WeightDims[1], kk = (int)c.KernelSize;
        var sc = new float[c.Group * perGroupOut * kk];
        var zs = new sbyte[sc.Length];
        for (int o = 0; o < c.Group * perGroupOut; o++)
            for (int p = 0; p < kk; p++)
            {
                sc[o * kk + p] = q.Scales[o];
                zs[o * kk + p] = q.ZeroPoints?[o] ?? 0;
            }
        var scale = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_scale", dims, sc));
        var zp = g.AddInitializer(Tensor.FromValues(l.Weight.Name + "_zero_point", (int)DT.Int8, dims, (ReadOnlySpan<sbyte>)zs));
        var dq = new Emitter(g, l.Node, l.Name).Node("DequantizeLinear", "/weight_dq", wq, scale, zp);
        dq.SetAttribute("axis", 0L);
        dq.SetAttribute("block_size", c.WeightDims[0] / c.Group);
        return dq;
    }

    /// <summary>Per-channel int4 weights: one scale (and zero point) per output channel, DequantizeLinear with an axis and no
    /// block_size.</summary>
    private static Node Int4PerChannel(Graph g, LinearLayer l, QuantizedWeight q, Value wq, bool nk)
    {
        int n = (int)l.OutFeatures;
        var scale = g.AddInitializer(Tensor.FromFloats(l.Weight.Name + "_scale", [n], q.Scales));
        var zpPacked = Nibbles.Pack(q.ZeroPoints ?? new sbyte[n]);
        var zp = g.AddInitializer(Tensor.FromBytes(l.Weight.Name + "_zero_point", (int)DT.Int4, [n], zpPacked));
        var dq = new Emitter(g, l.Node, l.Name).Node("DequantizeLinear", "/weight_dq", wq, scale, zp);
        dq.SetAttribute("axis", nk ? 0L : 1L);
        return dq;
    }

    private static void LowerActivation(PassContext ctx, Graph g, LinearLayer l, LayerPlan plan, Dictionary<(Value, string, float, float),
        Value> cache,
        Dictionary<Value, Value> rowScales)
    {
        if (plan.ActivationFormat == NumberFormat.Fp32) return;
        var x = l.Input;
        if (plan.ActivationMode == ActivationMode.Dynamic)
        {
            int levels = plan.ActivationFormat.SymmetricLevels;
            bool integer = plan.WeightFormat.IsInt8Storage &&
                (l.Node.OpType == "MatMul" || l.Node.Inputs.Count < 3 || l.Node.Inputs[2] is null);
            var key = (x, (integer ? "dynamic-int-" : "dynamic-") + plan.ActivationFormat, 0f, 0f);
            if (!cache.TryGetValue(key, out var fq))
            {
                if (integer)
                {
                    (fq, var rowScale) = DynamicPerTokenInteger(g, x, levels, l);
                    rowScales[fq] = rowScale;
                }
                else fq = DynamicPerToken(g, x, levels, l);
                ctx.Provenance.Record(fq.Name, x.Name);
                cache[key] = fq;
            }
            l.Node.SetInput(0, fq);
            if (integer)
            {
                ScaleOutput(g, l.Node, rowScales[fq], l.Name);
                plan.Reasons.Add($"lower_qdq: per-token {plan.ActivationFormat} activations on the integer kernel (rows divided by their " +
                    $"absmax, QuantizeLinear scale 1/levels, product times the absmax)");
            }
            return;
        }
        if (plan.ActivationRange is not { } range)
            throw new Quantc.Onnx.BadInputException($"lower_qdq: {l.Name} has static {plan.ActivationFormat} activations without a " +
            $"range: put a ranges pass before lower_qdq in the recipe");
        bool unsigned = plan.ActivationFormat == NumberFormat.UInt8;
        float scale, zeroPoint;
        if (plan.ActivationFormat == NumberFormat.Fp8)
        {
            scale = Math.Max(Math.Max(Math.Abs(range.Lo), Math.Abs(range.Hi)) / (float)QuantFormat.Float8E4M3Fn.Max, 1e-12f);
            zeroPoint = 0;
        }
        else if (unsigned)
        {
            float lo = Math.Min(range.Lo, 0), hi = Math.Max(range.Hi, 0);
            scale = Math.Max((hi - lo) / 255f, 1e-12f);
            zeroPoint = MathF.Round(-lo / scale);
        }
        else
        {
            int levels = plan.ActivationFormat.SymmetricLevels;
            scale = Math.Max(Math.Max(Math.Abs(range.Lo), Math.Abs(range.Hi)) / levels, 1e-12f);
            zeroPoint = 0;
        }
        var cacheKey = (x, plan.ActivationFormat.Name, scale, zeroPoint);
        if (!cache.TryGetValue(cacheKey, out var dqOut))
        {
            var first = GraphOrder.FirstUser(g, x)!;
            Value src = x;
            if (plan.ActivationFormat == NumberFormat.Int6 || plan.ActivationFormat == NumberFormat.Int4)
            {
                // The 6-bit (4-bit) grid on int8 storage: clipped to it first.
                var grid = plan.ActivationFormat.Grid!;
                var lo = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Name + "_clip_lo"), [], [(float)grid.Min * scale]));
                var hi = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Name + "_clip_hi"), [], [(float)grid.Max * scale]));
                src = new Emitter(g, first, l.Name).Node("Clip", "/act_clip", x, lo, hi).Output;
            }
            var s = g.AddInitializer(Tensor.FromFloats(g.UniqueName(x.Name + "_scale"), [], [scale]));
            if (plan.ActivationFormat == NumberFormat.Fp8)
            {
                // float8 as Div → Cast(float8e4m3fn, saturate) → Cast(float) → Mul: the same values as QuantizeLinear /
                // DequantizeLinear of FLOAT8E4M3FN, but ONNX Runtime 1.31's QDQ MatMul fusion would take a float8
                // Q/DQ pair for an integer one (it fails to load: MatMulIntegerToFloat with a float8 input).
                var div = new Emitter(g, first, l.Name).Node("Div", "/act_fp8_div", src, s);
                var to8 = new Emitter(g, first, l.Name).Node("Cast", "/act_fp8", div.Output);
                to8.SetAttribute("to", (long)DT.Float8E4M3Fn);
                to8.SetAttribute("saturate", 1L);
                var back = new Emitter(g, first, l.Name).Node("Cast", "/act_fp8_float", to8.Output);
                back.SetAttribute("to", (long)DT.Float);
                dqOut = new Emitter(g, first, l.Name).Node("Mul", "/act_fp8_dq", back.Output, s).Output;
                ctx.Provenance.Record(dqOut.Name, x.Name);
                cache[cacheKey] = dqOut;
                l.Node.SetInput(0, dqOut);
                return;
            }
            // The zero point's type is QuantizeLinear's output type: uint8 or int8.
            var zp = unsigned
                ? g.AddInitializer(Tensor.FromValues(g.UniqueName(x.Name + "_zero_point"), (int)DT.Uint8, [],
                    (ReadOnlySpan<byte>)[(byte)zeroPoint]))
                : g.AddInitializer(Tensor.FromValues(g.UniqueName(x.Name + "_zero_point"), (int)DT.Int8, [], (ReadOnlySpan<sbyte>)[0]));
            var qn = new Emitter(g, first, l.Name).Node("QuantizeLinear", "/act_q", src, s, zp);
            var dqn = new Emitter(g, first, l.Name).Node("DequantizeLinear", "/act_dq", qn.Output, s, zp);
            dqOut = dqn.Output;
            ctx.Provenance.Record(dqOut.Name, x.Name);
            cache[cacheKey] = dqOut;
        }
        l.Node.SetInput(0, dqOut);
    }

    /// <summary>
    /// x → DequantizeLinear(QuantizeLinear(x / s, 1, 128u8), 1, 128u8) with s = max|x_row| / levels per token
    /// (row): the integers round(x / s) of per-token quantization, as QDQ with a constant scale that ONNX
    /// Runtime fuses with the MatMul behind it. The caller multiplies the MatMul's result by s.
    /// </summary>
    private static (Value Dq, Value RowScale) DynamicPerTokenInteger(Graph g, Value x, int levels, LinearLayer l)
    {
        var e = new Emitter(g, l.Node, l.Name + "/act_dyn");
        // m = max|x_row|; x / m ∈ [−1, 1] quantized with the constant scale 1 / levels, so that QuantizeLinear gives
        // round(x / (m / levels)) and the fused kernel's activation scale is 1 / levels: the caller multiplies by m.
        var m = e.RowAbsMax(x);
        var scaled = e.Op("Div", "_div", x, m);
        var step = e.Float("_unit_scale", 1f / levels);
        var zp = e.UInt8("_zero_point", 128);
        var q = e.Op("QuantizeLinear", "_q", scaled, step, zp);
        return (e.Op("DequantizeLinear", "_dq", q, step, zp), m);
    }

    /// <summary>
    /// y = node's first output → y · s, the product taking y's name (so reports and verify still find the layer's
    /// result by name); y is renamed.
    /// </summary>
    private static void ScaleOutput(Graph g, Node node, Value s, string layerName)
    {
        var y = node.Output;
        var firstUser = GraphOrder.FirstUser(g, y);
        var mul = new Emitter(g, firstUser, layerName).Node("Mul", "/act_dyn_rescale", y, s);
        g.ReplaceValue(y, mul.Output);
        mul.SetInput(0, y);
    }

    /// <summary>x → x̂ = round(x / s) · s with s = max|x_row| / levels per token (row), in float ops.</summary>
    private static Value DynamicPerToken(Graph g, Value x, int levels, LinearLayer l)
    {
        var e = new Emitter(g, l.Node, l.Name + "/act_dyn");
        var lv = e.Float("_levels", levels);
        var s = e.Op("Div", "_scale", e.RowAbsMax(x), lv);
        var q = e.Op("Round", "_round", e.Op("Div", "_div", x, s));
        var lo = e.Float("_lo", -levels - 1);
        var hi = e.Float("_hi", levels);
        var c = e.Op("Clip", "_clip", q, lo, hi);
        return e.Op("Mul", "_dq", c, s);
    }
}
