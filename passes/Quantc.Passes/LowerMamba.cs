using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Passes;

/// <summary>
/// LowerMamba: turns the plan of Mamba models into operators. With quantc's kernels (default) each
/// mixer's conv1d + SiLU becomes <c>ai.quantc.QCausalConv1d</c> on int8 x, the selective scan and its
/// gate become <c>ai.quantc.QSelectiveScan</c> on int8 x, dt, B, C and z (Δ's softplus and bias
/// fused), every int8-weight / int8-static-activation linear layer becomes <c>ai.quantc.MatMulInt8</c>,
/// and an online Hadamard in front of one becomes <c>ai.quantc.HadamardQuantizeInt8</c>. With
/// <c>portable</c> it emits standard ONNX only: QuantizeLinear → DequantizeLinear on the same
/// tensors in front of the float Conv and Scan, Hadamards as MatMuls by the constant ±1 matrix, and
/// the linear layers through <see cref="LowerQdqPass"/> — a model stock ONNX Runtime runs. Layers the
/// fused path cannot take (other formats) are left to <see cref="LowerQdqPass"/> as well.
/// With <c>quantize_inside</c> (the default) a MatMulInt8 whose input no other kernel already quantizes with the same scale
/// takes the float32 input and quantizes it inside (MatMulInt8 with float A: the QuantizeLinear it replaces, bit for bit).
/// </summary>
public sealed class LowerMambaPass(bool portable, bool quantizeInside = true) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<LowerMambaOptions>("lower_mamba", PassKind.Lowering,
        "Mamba: conv → ai.quantc.QCausalConv1d, scan → QSelectiveScan, int8 linear layers → MatMulInt8 (Hadamard in front → " +
            "HadamardQuantizeInt8)",
        o => new LowerMambaPass(o.Portable, o.QuantizeInside))
        with { Contract = PassContract.Lowers };

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    private static readonly string[] Roles = ["conv x", "scan x", "scan dt", "scan B", "scan C", "scan z"];

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var cache = new Dictionary<(Value, float), (Value Q, Value Scale)>();
        foreach (var b in ctx.Map.Mambas)
        {
            var values = new[] { b.X, b.ScanX, b.Dt, b.B, b.C, b.Z };
            var plans = new Dictionary<string, ActivationPlan>(StringComparer.Ordinal);
            for (int i = 0; i < Roles.Length; i++)
                if (ctx.Plan.Activations.TryGetValue(values[i].Name, out var p) && p.Format == NumberFormat.Int8) plans[Roles[i]] = p;
            if (plans.Count != Roles.Length)
                { ctx.Log.Add($"lower_mamba: {b.Name} left float: its conv and scan inputs have no int8 plan (run " +
                $"mamba_ranges)"); continue; }
            if (portable) LowerPortable(ctx, g, b, plans);
            else LowerFused(ctx, g, b, plans, cache);
            ctx.Log.Add($"lower_mamba: {b.Name} → {(portable ? "QDQ around Conv and Scan" : "QCausalConv1d, QSelectiveScan")}");
        }
        g.RemoveDeadCode();
        if (portable) ReplaceHadamards(ctx, g);
        else LowerLinears(ctx, g, cache, quantizeInside);
        g.RemoveDeadCode();
        g.SortTopologically();
        LowerQdqPass.LowerAll(ctx);
    }

    // ------------------------------------------------------------------ quantc kernels

    private static void LowerFused(PassContext ctx, Graph g, MambaBlock b, Dictionary<string, ActivationPlan> plans,
        Dictionary<(Value, float), (Value, Value)> cache)
    {
        ctx.Model.SetOpset(CustomOps.Domain, 1);
        // Conv: QCausalConv1d(x int8, x_scale, weight [d, K], bias, state) → (SiLU(conv), new state).
        var first = b.ConvNodes[0];
        var (xq, xs) = Quantize(g, b.X, plans["conv x"].Scale, first, cache);
        long e = b.InnerSize, k = b.ConvKernel;
        var w = g.AddInitializer(Tensor.FromFloats(g.UniqueName(b.ConvWeight.Name + "_dk"), [e, k], b.ConvWeight.Initializer!.ToFloat32()));
        var convIn = new List<Value?> { xq, xs, w, b.ConvBias ?? Zeros(g, b.Name + ".conv1d.bias", e) };
        var convOutNames = new List<string> { g.UniqueName(b.ScanX.Name + "_int8conv") };
        if (b.ConvState is { } state)
        {
            convIn.Add(state);
            if (b.ConvStateOut is { } so) convOutNames.Add(TakeName(g, so));
        }
        var conv = new Emitter(g, first, b.Name).NodeOf("QCausalConv1d", "/conv1d_int8", convIn, CustomOps.Domain,
            outputNames: convOutNames);
        conv.SetAttribute("silu", 1L);
        ctx.Provenance.Record(conv.Outputs[0]!.Name, b.ScanX.Name);
        g.ReplaceAllUses(b.ScanX, conv.Outputs[0]!);
        if (conv.Outputs.Count > 1) g.ReplaceAllUses(b.ConvStateOut!, conv.Outputs[1]!, includeGraphOutputs: true);

        // Scan + gate: QSelectiveScan(x, dt, A, B, C, D, z, dt_bias, h0) → (y ⊙ SiLU(z), final state).
        var at = b.Scan;
        var (sx, sxs) = Quantize(g, conv.Outputs[0]!, plans["scan x"].Scale, at, cache);
        var (dq, dqs) = Quantize(g, b.Dt, plans["scan dt"].Scale, at, cache);
        var (bq, bqs) = Quantize(g, b.B, plans["scan B"].Scale, at, cache);
        var (cq, cqs) = Quantize(g, b.C, plans["scan C"].Scale, at, cache);
        var (zq, zqs) = Quantize(g, b.Z, plans["scan z"].Scale, at, cache);
        var d = b.D ?? Zeros(g, b.Name + ".D", e);
        string hName = TakeName(g, b.HOut);
        Value?[] scanIn = [sx, sxs, dq, dqs, b.A, bq, bqs, cq, cqs, d, zq, zqs, b.DtBias, b.H0];
        var scan = new Emitter(g, at, b.Name).NodeOf("QSelectiveScan", "/selective_scan_int8", scanIn, CustomOps.Domain,
            outputNames: [g.UniqueName(b.Gated.Name + "_int8scan"), hName]);
        scan.SetAttribute("dt_softplus", 1L);
        ctx.Provenance.Record(scan.Outputs[0]!.Name, b.Gated.Name);
        g.ReplaceAllUses(b.Gated, scan.Outputs[0]!, includeGraphOutputs: true);
        g.ReplaceAllUses(b.HOut, scan.Outputs[1]!, includeGraphOutputs: true);
    }

    /// <summary>Every int8 (per channel) weight / int8 static activation MatMul → MatMulInt8 (a Hadamard in front →
    /// HadamardQuantizeInt8; with <paramref name="inside"/> a float32 input no kernel quantizes yet goes to the op as it is).</summary>
    private static void LowerLinears(PassContext ctx, Graph g, Dictionary<(Value, float), (Value, Value)> cache, bool inside)
    {
        int lowered = 0, quantizedInside = 0;
        foreach (var l in ctx.Map.Linears)
        {
            if (!ctx.Plan.TryGet(l.Name, out var plan) || plan.QuantizedWeight is not { GroupSize: 0 } q ||
                (plan.WeightFormat != NumberFormat.Int8 && plan.WeightFormat != NumberFormat.Int7)
                || plan.ActivationFormat != NumberFormat.Int8 || plan.ActivationMode != ActivationMode.Static ||
                    plan.ActivationRange is not { } range || !l.Node.Is("MatMul"))
                continue;
            ctx.Model.SetOpset(CustomOps.Domain, 1);
            float s = Math.Max(Math.Max(Math.Abs(range.Lo), Math.Abs(range.Hi)) / 127f, 1e-12f);
            Value aq, aScale;
            if (l.Input.Producer is { } h && h.Is("Hadamard", CustomOps.Domain) && l.Input.Uses.Count == 1 && !l.Input.IsGraphOutput)
            {
                // The transform and the quantization of its output in one kernel. HadamardQuantizeInt8 normalises by
                // 1/√K; the range was calibrated on the transform as the graph has it (normalised or not).
                float fused = h.GetInt("normalize", 1) != 0 ? s : s / MathF.Sqrt(l.InFeatures);
                aScale = Scalar(g, l.Input.Name + "_scale", s);
                var hq = Scalar(g, l.Input.Name + "_hq_scale", fused);
                aq = new Emitter(g, l.Node, l.Name).Node("HadamardQuantizeInt8", CustomOps.Domain, "/hadamard_quantize", h.Inputs[0], hq)
                    .Output;
                ctx.Provenance.Record(aq.Name, l.Input.Name);
            }
            else if (l.Input.Producer is { } sc && sc.Is("QSelectiveScan", CustomOps.Domain) && l.Input.ProducerOutputIndex == 0 &&
                l.Input.Uses.Count == 1
                     && !l.Input.IsGraphOutput && sc.Inputs.Count == 14 && sc.Outputs.Count == 2)
            {
                // No Hadamard between the scan and this layer: the scan quantizes its own output (y_q, y_scale).
                aScale = Scalar(g, l.Input.Name + "_scale", s);
                aq = ScanWithInt8Output(g, sc, aScale);
            }
            else if (inside && !cache.ContainsKey((l.Input, s)) && l.Input.ElementType is 0 or (int)DT.Float)
            {
                aq = l.Input;  // MatMulInt8 with float A: QuantizeLinear(x, s, 0) inside the op
                aScale = Scalar(g, l.Input.Name + "_scale", s);
                quantizedInside++;
            }
            else (aq, aScale) = Quantize(g, l.Input, s, l.Node, cache);
            var wq = g.AddInitializer(Tensor.FromValues(g.UniqueName(l.Weight.Name + "_int8"), (int)DT.Int8, [q.N, q.K],
                (ReadOnlySpan<sbyte>)q.Values));
            var ws = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Weight.Name + "_scale"), [q.N], q.Scales));
            ctx.Provenance.Record(wq.Name, l.Weight.Name);
            var inputs = new List<Value?> { aq, aScale, wq, ws };
            if (l.Bias is { } bias) inputs.Add(bias);
            var output = l.Output;
            string name = TakeName(g, output);
            var mm = new Emitter(g, l.Node, l.Name).NodeOf("MatMulInt8", "/matmul_int8", inputs, CustomOps.Domain, outputNames: [name]);
            g.ReplaceAllUses(output, mm.Output, includeGraphOutputs: true);
            plan.LoweredBy = Info.Name;
            plan.Reasons.Add("lower_mamba: ai.quantc.MatMulInt8"
                + (ReferenceEquals(aq, l.Input) ? " quantizing its float32 input inside"
                : aq.Producer!.Is("HadamardQuantizeInt8", CustomOps.Domain) ? " after HadamardQuantizeInt8"
                : aq.Producer.Is("QSelectiveScan", CustomOps.Domain) ? " on the scan's int8 output" : ""));
            lowered++;
        }
        if (lowered > 0)
            ctx.Log.Add($"lower_mamba: {lowered} linear layers as ai.quantc.MatMulInt8, {quantizedInside} of them quantizing their " +
                $"float32 input inside the op" + (inside ? "" : " (quantize_inside: false)"));
    }

    /// <summary>
    /// <paramref name="scan"/> rebuilt with its int8 output: input 14 <c>y_scale</c>, output 2 <c>y_q</c> (y and the state keep
    /// their names and readers); returns y_q.
    /// </summary>
    private static Value ScanWithInt8Output(Graph g, Node scan, Value yScale)
    {
        var y = scan.Outputs[0]!;
        var h = scan.Outputs[1];
        var q = new Emitter(g, scan, scan.Name).NodeOf("QSelectiveScan", "", [.. scan.Inputs, yScale], CustomOps.Domain,
            outputNames: [g.UniqueName(y.Name), h is null ? "" : g.UniqueName(h.Name), g.UniqueName(y.Name + "_int8")]);
        q.CopyAttributes(scan);
        g.ReplaceValue(y, q.Outputs[0]!);
        if (h is not null) g.ReplaceValue(h, q.Outputs[1]!);
        g.RemoveNode(scan);
        return q.Outputs[2]!;
    }

    /// <summary>x → int8 QuantizeLinear(x, s) (one per value and scale), inserted before <paramref name="before"/>.</summary>
    private static (Value Q, Value Scale) Quantize(Graph g, Value x, float s, Node before, Dictionary<(Value, float), (Value, Value)> cache)
    {
        if (cache.TryGetValue((x, s), out var hit)) return hit;
        var e = new Emitter(g, before, x.Name);
        var sc = e.Float("_scale", s);
        var q = e.Op("QuantizeLinear", "/quantize", x, sc, e.Int8("_zero_point", 0));
        return cache[(x, s)] = (q, sc);
    }

    // ------------------------------------------------------------------ portable (standard ONNX)

    private static void LowerPortable(PassContext ctx, Graph g, MambaBlock b, Dictionary<string, ActivationPlan> plans)
    {
        // On the transposed x (same values, so the same per-tensor quantization): ONNX Runtime's QDQ propagation
        // rewrites a QuantizeLinear → DequantizeLinear in front of a Transpose into an ill-typed QuantizeLinear.
        var xt = b.ConvNodes[0].Is("Transpose") && b.X.Uses.Count == 1 ? b.ConvNodes[0].Output : b.X;
        Qdq(ctx, g, xt, plans["conv x"].Scale, null);
        Qdq(ctx, g, b.ScanX, plans["scan x"].Scale, b.Scan);   // x_proj reads the same x; lower_qdq quantizes its copy with the same scale
        Qdq(ctx, g, b.Dt, plans["scan dt"].Scale, null);
        Qdq(ctx, g, b.B, plans["scan B"].Scale, null);
        Qdq(ctx, g, b.C, plans["scan C"].Scale, null);
        Qdq(ctx, g, b.Z, plans["scan z"].Scale, null);
    }

    /// <summary>QuantizeLinear → DequantizeLinear (int8, symmetric) on <paramref name="x"/> for all its readers, or only <paramref
    /// name="only"/>.</summary>
    private static void Qdq(PassContext ctx, Graph g, Value x, float s, Node? only)
    {
        var users = x.Uses.Where(u => only is null || ReferenceEquals(u.Node, only)).ToList();
        var first = users.Select(u => u.Node).Where(n => ReferenceEquals(n.Graph, g)).OrderBy(n => g.Nodes.ToList().IndexOf(n)).First();
        var e = new Emitter(g, first, x.Name);
        var sc = e.Float("_scale", s);
        var zp = e.Int8("_zero_point", 0);
        var q = e.Node("QuantizeLinear", "/act_q", x, sc, zp);
        var dq = e.Node("DequantizeLinear", "/act_dq", q.Output, sc, zp);
        foreach (var u in users) u.Node.SetInput(u.InputIndex, dq.Output);
        ctx.Provenance.Record(dq.Output.Name, x.Name);
    }

    /// <summary>Every unnormalised ai.quantc.Hadamard → MatMul by the constant Hᵀ (what online_hadamard emits with portable).</summary>
    private static void ReplaceHadamards(PassContext ctx, Graph g)
    {
        foreach (var h in g.Nodes.Where(n => n.Is("Hadamard", CustomOps.Domain)).ToList())
        {
            if (h.GetInt("normalize", 1) != 0)
                throw new Quantc.Onnx.BadInputException($"lower_mamba portable: {h} normalises; only the unnormalised transform " +
                $"online_hadamard emits is lowered");
            var reader = ctx.Map.Linears.FirstOrDefault(l => ReferenceEquals(l.Input, h.Output))
                ?? throw new Quantc.Onnx.BadInputException($"lower_mamba portable: {h} does not feed a linear layer");
            var m = OnlineHadamardPass.HadamardMatMul(g, h.Inputs[0]!, reader.InFeatures, reader.Name, h);
            g.ReplaceAllUses(h.Output, m);
            g.RemoveNode(h);
        }
    }

    // ------------------------------------------------------------------ helpers

    private static Value Scalar(Graph g, string name, float v) => g.AddInitializer(Tensor.FromFloats(g.UniqueName(name), [], [v]));

    private static Value Zeros(Graph g, string name, long n) => g.AddInitializer(Tensor.FromFloats(g.UniqueName(name), [n], new float[n]));

    /// <summary>Frees <paramref name="v"/>'s name for its replacement (the old value is renamed) and returns it.</summary>
    private static string TakeName(Graph g, Value v)
    {
        string name = v.Name;
        g.RenameValueUnique(v, name + "_float");
        return name;
    }
}

/// <summary>lower_mamba's options.</summary>
public sealed record LowerMambaOptions : PassOptions
{
    [Option("standard ONNX ops only (no ai.quantc kernels): MatMul by a constant Hadamard matrix, QDQ instead of fused integer kernels")]
    public bool Portable { get; init; }

    [Option("MatMulInt8 takes a float32 input no other kernel quantizes and quantizes it with its static scale itself " +
        "(bit-identical to the QuantizeLinear it replaces)")]
    public bool QuantizeInside { get; init; } = true;
}
