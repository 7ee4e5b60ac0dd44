using System.Globalization;
using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>
/// A recognised Mamba-1 mixer: in_proj → split (x, z) → causal depthwise conv1d (+ SiLU) → x_proj
/// → split (dt, B, C) → dt_proj (+ bias, softplus) → selective scan (x, Δ, A, B, C, D) → y ⊙ SiLU(z)
/// → out_proj. Values are the ones quantization reads; nodes are the ones lowering replaces.
/// </summary>
public sealed class MambaBlock
{
    /// <summary>Stable name, e.g. <c>backbone.layers.0.mixer</c>.</summary>
    public required string Name { get; init; }

    /// <summary>How the block is written (<c>onnx-scan</c>: the selective scan as an ONNX Scan).</summary>
    public required string Form { get; init; }

    /// <summary>in_proj (its output is split into x and z).</summary>
    public required LinearLayer InProj { get; init; }

    /// <summary>The Split of in_proj's output into x and z.</summary>
    public required Node InSplit { get; init; }

    /// <summary>The conv's input x [batch, length, d_inner] (in_proj's first half).</summary>
    public required Value X { get; init; }

    /// <summary>The gate z [batch, length, d_inner] (in_proj's second half).</summary>
    public required Value Z { get; init; }

    /// <summary>The depthwise Conv node.</summary>
    public required Node Conv { get; init; }

    /// <summary>Conv weight [d_inner, 1, K].</summary>
    public required Value ConvWeight { get; init; }

    /// <summary>Conv bias [d_inner], else null.</summary>
    public Value? ConvBias { get; init; }

    /// <summary>The conv state the window starts from [batch, d_inner, K−1] (a graph input of the stateful form), else null.</summary>
    public Value? ConvState { get; init; }

    /// <summary>The Concat of the conv state and x (transposed), else null.</summary>
    public Node? ConvConcat { get; init; }

    /// <summary>The new conv state (the window's last K−1 inputs) when the graph computes it, else null.</summary>
    public Value? ConvStateOut { get; init; }

    /// <summary>The nodes from x to the SiLU output (Transpose, Concat, Conv, Transpose, Sigmoid, Mul), in order.</summary>
    public required IReadOnlyList<Node> ConvNodes { get; init; }

    /// <summary>The scan's input x: SiLU(conv(x)) [batch, length, d_inner] (also x_proj's input).</summary>
    public required Value ScanX { get; init; }

    /// <summary>x_proj.</summary>
    public required LinearLayer XProj { get; init; }

    /// <summary>The Split of x_proj's output into dt, B and C.</summary>
    public required Node DbcSplit { get; init; }

    /// <summary>B [batch, length, d_state].</summary>
    public required Value B { get; init; }

    /// <summary>C [batch, length, d_state].</summary>
    public required Value C { get; init; }

    /// <summary>dt_proj (its bias is the softplus's dt bias).</summary>
    public required LinearLayer DtProj { get; init; }

    /// <summary>dt_proj's MatMul output before the bias: the scan's dt.</summary>
    public Value Dt => DtProj.Node.Output;

    /// <summary>dt bias [d_inner] (an initializer).</summary>
    public required Value DtBias { get; init; }

    /// <summary>The Softplus node; its output is Δ.</summary>
    public required Node Softplus { get; init; }

    /// <summary>A [d_inner, d_state] as the scan reads it (negative).</summary>
    public required Value A { get; init; }

    /// <summary>The initializer A is computed from: A_log (A = −exp(A_log)), or A itself.</summary>
    public required Value ALog { get; init; }

    /// <summary>True when <see cref="ALog"/> holds log(−A) (A = −exp(A_log)), false when it is A.</summary>
    public required bool AIsLog { get; init; }

    /// <summary>The skip D [d_inner], else null.</summary>
    public Value? D { get; init; }

    /// <summary>The Scan node.</summary>
    public required Node Scan { get; init; }

    /// <summary>The initial SSM state [batch, d_inner, d_state].</summary>
    public required Value H0 { get; init; }

    /// <summary>The final SSM state (Scan output 0).</summary>
    public required Value HOut { get; init; }

    /// <summary>The scan's y (before the gate).</summary>
    public required Value Y { get; init; }

    /// <summary>The gate Mul: y ⊙ SiLU(z).</summary>
    public required Node Gate { get; init; }

    /// <summary>The gate's output: out_proj's input (before any rotation).</summary>
    public Value Gated => Gate.Output;

    /// <summary>The online Hadamard between the gate and out_proj (ai.quantc.Hadamard), else null.</summary>
    public Node? OutRotation { get; init; }

    /// <summary>out_proj.</summary>
    public required LinearLayer OutProj { get; init; }

    /// <summary>d_inner.</summary>
    public long InnerSize => ConvWeight.Initializer!.Dims[0];

    /// <summary>d_state.</summary>
    public long StateSize => ALog.Initializer!.Dims[1];

    /// <summary>Conv kernel width K.</summary>
    public long ConvKernel => ConvWeight.Initializer!.Dims[^1];

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Name} ({Form}, d_inner {InnerSize}, d_state {StateSize}, " +
            $"conv {ConvKernel}{(OutRotation is null ? "" : ", rotated out_proj input")})");
}

/// <summary>
/// The rules that select Mamba-1 mixers. The selective scan is anchored at its <c>Scan</c> node: the
/// pattern walks back to Δ = softplus(dt_proj(dt) + bias), dt/B/C from x_proj's split, x =
/// SiLU(conv1d(x)) and in_proj; the Scan body must compute the selective-scan recurrence (another
/// exporter's body or a fused op becomes one more alternative of <see cref="ScanBodies"/> or of the
/// root pattern). The gate <c>y ⊙ SiLU(z)</c> and out_proj are found from the Scan's output.
/// Checks give the reason for refusing a near miss.
/// </summary>
public static class MambaRules
{
    private static OpPattern Transpose(Pattern x, params long[] perm) =>
        P.Op("Transpose", x).Where(n => n.GetInts("perm") is { } p && p.SequenceEqual(perm));

    private static Pattern Silu(string x, Pattern first) =>
        P.Op("Mul", first, P.Op("Sigmoid", P.Same(x)).As("sigmoid")).Commutative();

    /// <summary>x = first half of Split(in_proj(u)).</summary>
    private static Pattern InProjX { get; } =
        P.Op("Split", P.Op("MatMul", P.Var("u"), P.Initializer("in_w")).As("in_proj")).Output(0).As("in_split").Named("x");

    /// <summary>
    /// SiLU(conv1d(x)) in torch.onnx's stateful form: Transpose → Concat(conv state, ·) along time →
    /// depthwise Conv (no padding) → Transpose → x·σ(x).
    /// </summary>
    public static Pattern ConvStateful { get; } =
        Silu("conv_t", Transpose(
            P.Op("Conv",
                P.Op("Concat", P.Var("conv_state"), Transpose(InProjX, 0, 2, 1).As("conv_in_t")).As("concat"),
                P.Initializer("conv_w")).As("conv"),
            0, 2, 1).As("conv_out_t").Named("conv_t")).Named("xc");

    /// <summary>The same without a state: Conv with left padding K−1 (and right padding trimmed by a Slice, or none).</summary>
    public static Pattern ConvPadded { get; } =
        Silu("conv_t", Transpose(
            P.Optional(P.Op("Slice",
                P.Op("Conv", Transpose(InProjX, 0, 2, 1).As("conv_in_t"), P.Initializer("conv_w")).As("conv")).As("trim")),
            0, 2, 1).As("conv_out_t").Named("conv_t")).Named("xc");

    /// <summary>Δ = Softplus(dt_proj(dt) + bias) with dt the first part of Split(x_proj(xc)).</summary>
    private static Pattern Delta { get; } =
        P.Op("Softplus",
            P.Op("Add",
                P.Op("MatMul", P.Op("Split", P.Op("MatMul", P.Var("xc"), P.Initializer("xp_w")).As("x_proj")).Output(0).As("dbc_split"),
                    P.Initializer("dt_w")).As("dt_proj"),
                P.Initializer("dt_bias")).Commutative().As("dt_bias_add")).As("softplus");

    /// <summary>The selective scan as an ONNX Scan over (state; Δ, x, B, C), as <c>MambaBuilder</c> and torch-style exports write
    /// it.</summary>
    public static Rule Scan { get; } = new("mamba",
        P.Op("Scan",
            P.Var("h0"),
            Delta,
            P.OneOf(ConvStateful, ConvPadded),
            P.Op("Split", P.Any()).Output(1).As("dbc_split").Named("B"),
            P.Op("Split", P.Any()).Output(2).As("dbc_split").Named("C")).Output(1).As("scan"),
        CheckScan);

    /// <summary>y ⊙ SiLU(z) with y (pre-bound) the scan's output.</summary>
    public static Rule Gate { get; } = new("mamba-gate",
        P.Op("Mul", P.Same("y"), Silu("z", P.Var("z")).Named("z_silu")).Commutative().As("gate"),
        m => m["z"].Producer is { } s && s.Is("Split") && s.Outputs.Count == 2 && ReferenceEquals(s.Outputs[1], m["z"])
            ? null : "the gate's z is not the second half of a Split");

    /// <summary>
    /// Scan bodies that compute h_t = exp(Δ_t·A)·h_{t−1} + (Δ_t·x_t)·B_t, y_t = C_t·h_t + D·x_t, with the
    /// body's inputs pre-bound as <c>h_prev, dt_t, x_t, B_t, C_t</c>; A and D are captured (outer values).
    /// </summary>
    public static IReadOnlyList<Pattern> ScanBodies { get; } =
    [
        P.Op("Add",
            P.Op("Squeeze", P.Op("MatMul",
                P.Op("Add",
                    P.Op("Mul", P.Op("Exp", P.Op("Mul", P.Op("Unsqueeze", P.Same("dt_t")), P.Var("A")).Commutative()),
                        P.Same("h_prev")).Commutative(),
                    P.Op("Mul", P.Op("Unsqueeze", P.Op("Mul", P.Same("dt_t"), P.Same("x_t")).Commutative()),
                        P.Op("Unsqueeze", P.Same("B_t"))).Commutative())
                    .Commutative().Named("h_next"),
                P.Op("Unsqueeze", P.Same("C_t")))),
            P.Op("Mul", P.Var("D"), P.Same("x_t")).Commutative()).Commutative(),
    ];

    /// <summary>Finds every Mamba mixer of <paramref name="graph"/> among the linear layers <paramref name="linears"/>; near misses go to
    /// <paramref name="refusals"/>.</summary>
    public static List<MambaBlock> Find(Graph graph, IReadOnlyList<LinearLayer> linears, List<Refusal> refusals)
    {
        var byNode = new Dictionary<Node, LinearLayer>(ReferenceEqualityComparer.Instance);
        foreach (var l in linears) byNode[l.Node] = l;
        var blocks = new List<MambaBlock>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Nodes)
        {
            if (!n.Is("Scan")) continue;
            var r = Scan.Try(n);
            if (r.Status == MatchStatus.NoMatch) continue;
            if (r.Status == MatchStatus.Refused) { refusals.Add(new Refusal("mamba", Refusal.Describe(n), r.Reason!, n)); continue; }
            if (Build(r.Match!, byNode, names, out string? why) is { } block) blocks.Add(block);
            else refusals.Add(new Refusal("mamba", Refusal.Describe(n), why!, n));
        }
        return blocks;
    }

    private static string? CheckScan(Match m)
    {
        var scan = m.NodeOf("scan")!;
        if (scan.Inputs.Count != 5 || scan.Outputs.Count != 2)
            return "not a selective scan: a Scan over (state; Δ, x, B, C) with outputs (state, y) is expected";
        if (scan.GetInt("num_scan_inputs", -1) != 4) return "num_scan_inputs is not 4";
        if (scan.GetInts("scan_input_axes") is not { Count: 4 } axes || axes.Any(a => a != 1))
            return "scan inputs are not scanned along axis 1 (time)";
        if (scan.GetInts("scan_output_axes") is { } oa && oa.Any(a => a != 1)) return "the scan output is not stacked along axis 1";
        if (scan.GetInts("scan_input_directions") is { } d && d.Any(x => x != 0)) return "a scan input runs backwards";
        if (scan.GetInts("scan_output_directions") is { } od && od.Any(x => x != 0)) return "the scan output runs backwards";
        var conv = m.NodeOf("conv")!;
        var w = m.TensorOf("conv_w")!;
        if (w.Dims.Length != 3 || w.Dims[1] != 1)
            return $"conv weight has shape {Constants.ShapeText(w.Dims)}, not [d_inner, 1, K] (depthwise)";
        long e = w.Dims[0], k = w.Dims[2];
        if (conv.GetInt("group", 1) != e) return $"conv is not depthwise (group {conv.GetInt("group", 1)}, {e} channels)";
        if (conv.GetInts("strides") is { } st && st.Any(s => s != 1)) return "conv stride is not 1";
        if (conv.GetInts("dilations") is { } dl && dl.Any(s => s != 1)) return "conv dilation is not 1";
        if (conv.Inputs.Count > 2 && conv.Inputs[2] is { } cb && (cb.Initializer is not { } bt || bt.ElementCount != e))
            return "conv bias is not an initializer of d_inner values";
        var pads = conv.GetInts("pads")?.ToArray() ?? [0, 0];
        if (m.NodeOf("concat") is { } cat)
        {
            if (cat.GetInt("axis", 0) is not (2 or -1)) return "the conv state is not concatenated along time";
            if (pads.Any(p => p != 0)) return "the stateful conv is padded";
        }
        else
        {
            if (pads.Length != 2 || pads[0] != k - 1)
                return $"conv is not causal: pads [{string.Join(", ", pads)}], left K−1 = {k - 1} expected";
            if (pads[1] != 0 && m.NodeOf("trim") is null) return "the conv's right padding is not trimmed";
        }
        var body = scan.Subgraphs.FirstOrDefault();
        if (body is null || body.Inputs.Count != 5 || body.Outputs.Count != 2)
            return "the Scan body does not have inputs (h, Δ_t, x_t, B_t, C_t) and outputs (h, y_t)";
        if (MatchBody(body) is not { } bm)
            return "the Scan body does not compute the selective-scan recurrence h = exp(Δ·A)·h + Δ·x·B, y = C·h + D·x";
        if (ResolveA(bm["A"]) is null) return $"A '{bm["A"].Name}' is neither an initializer nor −exp(A_log) of one";
        if (bm["D"].Initializer is not { } dt || dt.ElementCount != e) return $"D '{bm["D"].Name}' is not an initializer of d_inner values";
        if (m.TensorOf("dt_bias")!.ElementCount != e) return "the dt bias does not have d_inner values";
        return null;
    }

    /// <summary>The body's match (captures A, D, h_next) when it computes the recurrence, else null.</summary>
    public static Match? MatchBody(Graph body)
    {
        if (body.Inputs.Count != 5 || body.Outputs.Count != 2 || body.Outputs[1].Producer is null) return null;
        var bind = new Dictionary<string, Value>(StringComparer.Ordinal)
        {
            ["h_prev"] = body.Inputs[0], ["dt_t"] = body.Inputs[1], ["x_t"] = body.Inputs[2], ["B_t"] = body.Inputs[3],
                ["C_t"] = body.Inputs[4],
        };
        foreach (var p in ScanBodies)
            if (p.MatchValue(body.Outputs[1], bind) is { } m && ReferenceEquals(m["h_next"], body.Outputs[0])) return m;
        return null;
    }

    /// <summary>(initializer, is it A_log) behind the scan's A: −exp(A_log) (Neg(Exp) or Mul by −1), or A itself.</summary>
    private static (Value Init, bool IsLog)? ResolveA(Value a)
    {
        if (a.Initializer is { Dims.Length: 2 }) return (a, false);
        if (a.Producer is { } neg && neg.Is("Neg") && neg.Inputs[0]?.Producer is { } exp && exp.Is("Exp") &&
            exp.Inputs[0] is { Initializer.Dims.Length: 2 } log)
            return (log, true);
        return null;
    }

    private static MambaBlock? Build(Match m, Dictionary<Node, LinearLayer> byNode, HashSet<string> names, out string? why)
    {
        why = null;
        var scan = m.NodeOf("scan")!;
        LinearLayer? Lin(string node) => byNode.GetValueOrDefault(m.NodeOf(node)!);
        var inProj = Lin("in_proj");
        var xProj = Lin("x_proj");
        var dtProj = Lin("dt_proj");
        if (inProj is null || xProj is null || dtProj is null)
            { why = "in_proj, x_proj or dt_proj is not a recognised linear layer"; return null; }
        if (dtProj.BiasAdd is { } ba && !ReferenceEquals(ba, m.NodeOf("dt_bias_add")))
            { why = "dt_proj's bias is not the softplus's dt bias"; return null; }
        var y = scan.Outputs[1]!;
        Match? gate = null;
        foreach (var u in y.Uses)
        {
            var r = Gate.Try(u.Node, new Dictionary<string, Value>(StringComparer.Ordinal) { ["y"] = y });
            if (r.IsAccepted) { gate = r.Match; break; }
        }
        if (y.Uses.Count != 1 || gate is null) { why = "the scan's y is not (only) gated by SiLU(z)"; return null; }
        var inSplit = m.NodeOf("in_split")!;
        if (!ReferenceEquals(gate["z"], inSplit.Outputs[1])) { why = "the gate's z is not in_proj's second half"; return null; }
        var gated = gate.NodeOf("gate")!.Output;
        Node? rotation = null;
        var outInput = gated;
        if (gated.Uses.Count == 1 && gated.Uses[0].Node is { } h && h.Is("Hadamard", "ai.quantc"))
        {
            rotation = h;
            outInput = h.Output;
        }
        var outProj = byNode.Values.Where(l => ReferenceEquals(l.Input, outInput)).ToList();
        if (outProj.Count != 1 || outInput.Uses.Count != 1)
            { why = "the gated output does not feed exactly one linear layer (out_proj)"; return null; }
        var body = MatchBody(scan.Subgraphs.First())!;
        var (aInit, isLog) = ResolveA(body["A"])!.Value;
        var conv = m.NodeOf("conv")!;
        var concat = m.NodeOf("concat");
        Value? stateOut = null;
        if (concat is not null)
            foreach (var u in concat.Output.Uses)
                if (u.Node.Is("Slice")) stateOut = u.Node.Output;
        var convNodes = new List<Node?> { m.NodeOf("conv_in_t"), concat, conv, m.NodeOf("trim"), m.NodeOf("conv_out_t"),
            m.NodeOf("sigmoid"), m["xc"].Producer }
            .Where(n => n is not null).Select(n => n!).ToList();
        string prefix = inProj.Name.EndsWith(".in_proj", StringComparison.Ordinal) ? inProj.Name[..^".in_proj".Length] : inProj.Name
            + ".mixer";
        return new MambaBlock
        {
            Name = LayerNames.Unique(prefix, names),
            Form = "onnx-scan",
            InProj = inProj,
            InSplit = inSplit,
            X = m["x"],
            Z = gate["z"],
            Conv = conv,
            ConvWeight = conv.Inputs[1]!,
            ConvBias = conv.Inputs.Count > 2 ? conv.Inputs[2] : null,
            ConvState = concat is null ? null : m["conv_state"],
            ConvConcat = concat,
            ConvStateOut = stateOut,
            ConvNodes = convNodes,
            ScanX = m["xc"],
            XProj = xProj,
            DbcSplit = m.NodeOf("dbc_split")!,
            B = m["B"],
            C = m["C"],
            DtProj = dtProj,
            DtBias = m["dt_bias"],
            Softplus = m.NodeOf("softplus")!,
            A = body["A"],
            ALog = aInit,
            AIsLog = isLog,
            D = body["D"],
            Scan = scan,
            H0 = m["h0"],
            HOut = scan.Outputs[0]!,
            Y = y,
            Gate = gate.NodeOf("gate")!,
            OutRotation = rotation,
            OutProj = outProj[0],
        };
    }
}
