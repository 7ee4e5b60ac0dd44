using System.Globalization;
using Quantc.Ir.Patterns;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Import;

/// <summary>What <see cref="OpsetConverter.Require"/> did: the default domain's opset raised from <paramref name="From"/> to
/// <paramref name="To"/>, and how many nodes of each op were rewritten for the newer schemas.</summary>
public sealed record OpsetConversion(long From, long To, IReadOnlyDictionary<string, int> Rewritten)
{
    /// <summary>One line for the compile log.</summary>
    public string Describe() => Rewritten.Count == 0
        ? $"opset {From} → {To}: no op of the model changed its schema in between"
        : $"opset {From} → {To}: rewrote " + string.Join(", ", Rewritten.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Value} {kv.Key}"))) + " for the newer schemas";
}

/// <summary>
/// Raises a model's default-domain opset (every graph, subgraphs included) and rewrites each node whose operator's schema
/// changed between the model's opset and the target, so that the model computes the same function under the new
/// import: attributes that became inputs (Clip min/max at 11, Pad pads/value at 11, Slice starts/ends/axes at 10, TopK
/// k at 10, Dropout ratio at 12, Split split at 13, Squeeze/Unsqueeze axes at 13, ReduceSum axes at 13, the other
/// Reduce* axes at 18, DFT axis at 20), Softmax/LogSoftmax/Hardmax's coerce-to-2-D semantics before 13 (an explicit
/// Flatten → op over the last axis → Reshape back, or just the axis where it is already the last one), Split's
/// num_outputs at 18, BatchNormalization's spatial attribute (9) and training outputs (14), Resize-10 → 11
/// (coordinate_transformation_mode asymmetric, roi input), Upsample (deprecated at 10) → Resize, Scatter (deprecated at
/// 11) → ScatterElements. What it cannot convert faithfully is refused before anything is changed
/// (<see cref="BadInputException"/>, one line naming the node and why).
/// </summary>
public static class OpsetConverter
{
    /// <summary>The oldest opset converted from (the changes before 7 are in <see cref="LegacyOps"/>).</summary>
    public const long MinSource = 1;

    private static readonly string[] Reduce18 =
        ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
         "ReduceSumSquare"];

    private static readonly HashSet<string> Experimental = new(StringComparer.Ordinal)
        { "ImageScaler", "Crop", "Affine", "ScaledTanh", "ParametricSoftplus", "GivenTensorFill", "DynamicSlice" };

    /// <summary>
    /// Makes <paramref name="model"/>'s default-domain opset at least <paramref name="version"/>, converting the nodes whose schema
    /// changed; null when it already was (nothing changed). Refuses (before any change) what it cannot convert.
    /// </summary>
    public static OpsetConversion? Require(Model model, long version)
    {
        long from = model.OpsetVersion("") ?? model.OpsetVersion("ai.onnx") ?? 1;
        if (from >= version) return null;
        if (Refusal(model, from, version) is { } why)
            throw new BadInputException($"cannot convert the model from opset {from} to {version}, which the compile needs: {why}");
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var g in model.Graph.AllGraphs().ToList())
            foreach (var n in g.Nodes.Where(x => x.IsOnnxDomain).ToList())
                if (Convert(g, n, from, version)) counts[n.OpType] = counts.GetValueOrDefault(n.OpType) + 1;
        model.SetOpset(model.OpsetVersion("ai.onnx") is not null && model.OpsetVersion("") is null ? "ai.onnx" : "", version);
        return new OpsetConversion(from, version, counts);
    }

    /// <summary>Why <paramref name="model"/> cannot be raised to opset <paramref name="version"/> (null when it can, or already is):
    /// a pass whose rewrite is optional (a fusion) asks this first and leaves the model as it is.</summary>
    public static string? Blocker(Model model, long version)
    {
        long from = model.OpsetVersion("") ?? model.OpsetVersion("ai.onnx") ?? 1;
        return from >= version ? null : Refusal(model, from, version) is { } why ? $"opset {from} → {version}: {why}" : null;
    }

    /// <summary>Why <paramref name="model"/> cannot go from opset <paramref name="from"/> to <paramref name="to"/>, or null.</summary>
    public static string? Refusal(Model model, long from, long to)
    {
        if (from < MinSource) return $"its opset {from} is older than {MinSource}, the oldest the converter handles";
        foreach (var n in model.Graph.AllNodes().Where(x => x.IsOnnxDomain))
            if (NodeRefusal(n, from, to) is { } why) return $"{Describe(n)}: {why}";
        return null;
    }

    private static string Describe(Node n) => n.Name.Length > 0 ? $"{n.OpType} '{n.Name}'" : $"{n.OpType} → '{n.Outputs[0]?.Name}'";

    private static bool Crosses(long from, long to, long since) => from < since && to >= since;

    private static string? NodeRefusal(Node n, long from, long to)
    {
        if (Experimental.Contains(n.OpType) && to >= 10) return "an experimental op that ONNX removed at opset 10";
        if (Crosses(from, to, 7) && LegacyOps.Refusal(n, from) is { } legacy) return legacy;
        switch (n.OpType)
        {
            case "GridSample" when Crosses(from, to, 20) && n.GetString("mode") is { } gm
                && gm is not ("bilinear" or "bicubic" or "nearest"):
                return $"mode '{gm}'";
            case "Scan" when Crosses(from, to, 9):
                return "Scan-8's batch axis semantics changed at 9 and are not converted";
            case "GroupNormalization" when Crosses(from, to, 21):
                return "GroupNormalization's scale and bias changed from per group to per channel at 21";
            case "BatchNormalization" when Crosses(from, to, 9) && n.GetInt("spatial", 1) != 1:
                return "spatial = 0 (per-element statistics) has no equivalent from opset 9";
            case "BatchNormalization" when Crosses(from, to, 14) && n.Outputs.Skip(1).Any(Used):
                return "its training-mode outputs are used; BatchNormalization-14 changed them";
            case "Dropout" when Crosses(from, to, 10) && n.Outputs.Count > 1 && Used(n.Outputs[1]):
                return "its mask output is used, whose type changed (to bool) at 10";
            case "Resize" when Crosses(from, to, 11) && n.GetString("mode") is null or "nearest" && NearestModeOf10(n) is null:
                return "nearest resize with scales that are not constant (or that both up- and down-sample): Resize-10 rounds " +
                    "per direction";
            case "Resize" when Crosses(from, to, 13) && n.GetString("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
                return "coordinate_transformation_mode tf_half_pixel_for_nn was removed at 13";
            case "Upsample" when to >= 10 && n.GetString("mode") is not (null or "nearest" or "linear" or "bilinear"):
                return $"mode '{n.GetString("mode")}' has no Resize equivalent";
            case "Clip" or "Pad" when Crosses(from, to, 11) && to < 15 && !KnownFloat(n.Inputs[0]):
                return "the input's element type is unknown (no value_info), and CastLike needs opset 15";
        }
        return null;
    }

    private static bool Used(Value? v) => v is not null && (v.Uses.Count > 0 || v.IsGraphOutput);

    private static bool KnownFloat(Value? v) => ElementTypeOf(v) is (int)DT.Float or (int)DT.Double or (int)DT.Float16;

    /// <summary>Ops whose output has the element type of their first input.</summary>
    private static readonly HashSet<string> SameType = new(StringComparer.Ordinal)
    {
        "Conv", "ConvTranspose", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Softsign",
        "BatchNormalization", "InstanceNormalization", "LRN", "Add", "Sub", "Mul", "Div", "Pow", "Abs", "Neg", "Exp", "Log", "Sqrt",
        "Reciprocal", "Floor", "Ceil", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Reshape", "Flatten",
        "Transpose", "Identity", "Clip", "Gemm", "MatMul", "Concat", "Squeeze", "Unsqueeze", "Softmax", "LogSoftmax", "Pad", "Slice",
        "Resize", "Upsample", "Dropout", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Expand", "Tile", "Gather", "Split",
        "SpaceToDepth", "DepthToSpace", "Max", "Min", "Sum", "Mean",
    };

    /// <summary>
    /// The element type of <paramref name="v"/>: its declared type, else its producer's first input's (through ops that keep the
    /// type) or a Cast's target, back to a graph input or an initializer; 0 when unknown (at most 256 steps).
    /// </summary>
    private static int ElementTypeOf(Value? v)
    {
        for (int steps = 0; v is not null && steps < 256; steps++)
        {
            if (v.ElementType != 0) return v.ElementType;
            if (v.Producer is not { } p || !p.IsOnnxDomain) return 0;
            if (p.Is("Cast")) return (int)p.GetInt("to", 0);
            if (p.Is("Constant")) return Constants.Of(v)?.DataType ?? 0;
            if (!SameType.Contains(p.OpType) || p.Inputs.Count == 0) return 0;
            v = p.Inputs[0];
        }
        return 0;
    }

    /// <summary>Rewrites <paramref name="n"/> for the schemas of opset <paramref name="to"/>; true when it changed.</summary>
    private static bool Convert(Graph g, Node n, long from, long to)
    {
        bool changed = Crosses(from, to, 7) && LegacyOps.Convert(g, n, from);
        switch (n.OpType)
        {
            case "GridSample" when Crosses(from, to, 20) && n.GetString("mode") is "bilinear" or "bicubic":
                n.SetAttribute("mode", n.GetString("mode") == "bilinear" ? "linear" : "cubic");
                changed |= true;
                break;
            case "Clip" when Crosses(from, to, 11):
                changed |= ClipToInputs(g, n, to);
                break;
            case "Pad" when Crosses(from, to, 11):
                PadToInputs(g, n, to);
                changed |= true;
                break;
            case "Slice" when Crosses(from, to, 10):
                var ints = new[] { "starts", "ends", "axes" }.Select(a => n.GetInts(a)?.ToArray()).ToList();
                for (int i = 0; i < 3; i++)
                {
                    if (ints[i] is { } v) SetInput(n, i + 1, Int64s(g, n, v));
                    n.RemoveAttribute(i == 0 ? "starts" : i == 1 ? "ends" : "axes");
                }
                changed |= true;
                break;
            case "TopK" when Crosses(from, to, 10):
                changed |= AttrToInput(g, n, "k", 1, scalar: false);
                break;
            case "Dropout" when Crosses(from, to, 12):
                float ratio = n.GetFloat("ratio", 0.5f);
                n.RemoveAttribute("ratio");
                SetInput(n, 1, g.AddInitializer(Tensor.FromFloats(g.UniqueName(Prefix(n) + "_ratio"), [], [ratio])));
                changed |= true;
                break;
            case "Split" when Crosses(from, to, 13):
                changed |= AttrToInput(g, n, "split", 1, scalar: false);
                if (n.Inputs.Count < 2 || n.Inputs[1] is null) changed |= SplitOutputs(n, to);
                break;
            case "Split" when Crosses(from, to, 18) && (n.Inputs.Count < 2 || n.Inputs[1] is null):
                changed |= SplitOutputs(n, to);
                break;
            case "Squeeze" or "Unsqueeze" or "ReduceSum" when Crosses(from, to, 13):
                changed |= AttrToInput(g, n, "axes", 1, scalar: false);
                break;
            case var r when Reduce18.Contains(r) && Crosses(from, to, 18):
                changed |= AttrToInput(g, n, "axes", 1, scalar: false);
                break;
            case "DFT" when Crosses(from, to, 20):
                changed |= AttrToInput(g, n, "axis", 2, scalar: true);
                break;
            case "Softmax" or "LogSoftmax" or "Hardmax" when Crosses(from, to, 13):
                CoerceTo2D(g, n);
                changed |= true;
                break;
            case "BatchNormalization" when Crosses(from, to, 9) || Crosses(from, to, 14):
                changed |= n.RemoveAttribute("spatial") | n.RemoveAttribute("is_test");
                if (Crosses(from, to, 14) && n.Outputs.Count > 1) { OnlyFirstOutput(g, n); changed |= true; }
                break;
            case "Resize" when Crosses(from, to, 11):
                Resize10To11(g, n, to, n.Inputs[1]);
                changed |= true;
                break;
            case "Upsample" when to >= 10:
                UpsampleToResize(g, n, to);
                changed |= true;
                break;
            case "Scatter" when to >= 11:
                n.OpType = "ScatterElements";
                changed |= true;
                break;
        }
        return changed;
    }

    internal static string Prefix(Node n) => n.Name.Length > 0 ? n.Name : n.Outputs[0]?.Name ?? n.OpType;

    internal static Value Int64s(Graph g, Node n, long[] values, bool scalar = false) =>
        g.AddInitializer(Tensor.FromValues<long>(g.UniqueName(Prefix(n) + "_const"), (int)DT.Int64, scalar ? [] : [values.Length], values));

    internal static void SetInput(Node n, int index, Value? v)
    {
        while (n.Inputs.Count <= index) n.AddInput(null);
        n.SetInput(index, v);
    }

    /// <summary>An int (or ints) attribute → an int64 input at <paramref name="index"/>; false when the attribute is absent.</summary>
    private static bool AttrToInput(Graph g, Node n, string attr, int index, bool scalar)
    {
        var a = n.GetAttribute(attr);
        if (a is null) return false;
        long[] v = a.Proto.Type == Quantc.Onnx.Proto.AttributeProto.Types.AttributeType.Int ? [a.Proto.I] : a.Proto.Ints.ToArray();
        SetInput(n, index, Int64s(g, n, v, scalar));
        n.RemoveAttribute(attr);
        return true;
    }

    /// <summary>Split-18 needs num_outputs when no split sizes are given (equal parts, as before).</summary>
    private static bool SplitOutputs(Node n, long to)
    {
        if (to < 18 || n.GetAttribute("num_outputs") is not null) return false;
        n.SetAttribute("num_outputs", (long)n.Outputs.Count);
        return true;
    }

    /// <summary>A float constant of <paramref name="like"/>'s element type, before <paramref name="n"/>.</summary>
    private static Value TypedScalar(Graph g, Node n, Value like, float value, string suffix, long to)
    {
        var f = g.AddInitializer(Tensor.FromFloats(g.UniqueName(Prefix(n) + suffix), [], [value]));
        int type = ElementTypeOf(like);
        if (type == (int)DT.Float) return f;
        if (type != 0)
        {
            var cast = g.AddNode("Cast", [f], name: g.UniqueName(Prefix(n) + suffix + "_cast"), before: n);
            cast.SetAttribute("to", (long)type);
            return cast.Output;
        }
        if (to < 15) throw new InvalidOperationException("checked by NodeRefusal");
        return g.AddNode("CastLike", [f, like], name: g.UniqueName(Prefix(n) + suffix + "_castlike"), before: n).Output;
    }

    private static bool ClipToInputs(Graph g, Node n, long to)
    {
        var lo = n.GetAttribute("min");
        var hi = n.GetAttribute("max");
        if (lo is null && hi is null) return false;
        var x = n.Inputs[0]!;
        if (lo is not null) SetInput(n, 1, TypedScalar(g, n, x, lo.Proto.F, "_min", to));
        if (hi is not null) SetInput(n, 2, TypedScalar(g, n, x, hi.Proto.F, "_max", to));
        n.RemoveAttribute("min");
        n.RemoveAttribute("max");
        return true;
    }

    private static void PadToInputs(Graph g, Node n, long to)
    {
        var pads = n.GetInts("pads")?.ToArray() ?? n.GetInts("paddings")?.ToArray() ?? [];
        float value = n.GetFloat("value", 0f);
        SetInput(n, 1, Int64s(g, n, pads));
        if (value != 0f) SetInput(n, 2, TypedScalar(g, n, n.Inputs[0]!, value, "_value", to));
        n.RemoveAttribute("pads");
        n.RemoveAttribute("paddings");
        n.RemoveAttribute("value");
    }

    /// <summary>
    /// Softmax before 13 normalises the input coerced to 2-D at axis (default 1): the same as the new single-axis op over
    /// the last axis when the axis is the last one; otherwise Flatten(axis) → op(axis = -1) → Reshape(Shape(x)).
    /// </summary>
    private static void CoerceTo2D(Graph g, Node n)
    {
        long axis = n.GetInt("axis", 1);
        var x = n.Inputs[0]!;
        int? rank = x.Shape?.Length;
        if (axis == -1 || (rank is { } r && (axis == r - 1 || axis == -1)))
        {
            n.SetAttribute("axis", -1L);
            return;
        }
        var shape = g.AddNode("Shape", [x], name: g.UniqueName(Prefix(n) + "_shape"), before: n);
        var flat = g.AddNode("Flatten", [x], name: g.UniqueName(Prefix(n) + "_flatten"), before: n);
        flat.SetAttribute("axis", axis);
        n.SetInput(0, flat.Output);
        n.SetAttribute("axis", -1L);
        var y = n.Output;
        var next = NextNode(g, n);
        var back = g.AddNode("Reshape", [y, shape.Output], name: g.UniqueName(Prefix(n) + "_unflatten"), before: next);
        g.ReplaceValue(y, back.Output);
        back.SetInput(0, y);
    }

    private static Node? NextNode(Graph g, Node n)
    {
        int i = IndexOf(g, n);
        return i + 1 < g.Nodes.Count ? g.Nodes[i + 1] : null;
    }

    private static int IndexOf(Graph g, Node n)
    {
        for (int i = 0; i < g.Nodes.Count; i++) if (ReferenceEquals(g.Nodes[i], n)) return i;
        throw new InvalidOperationException($"{n} is not in graph '{g.Name}'");
    }

    /// <summary>Replaces <paramref name="n"/> by a copy with only its first output (BatchNormalization-14 in inference).</summary>
    private static void OnlyFirstOutput(Graph g, Node n)
    {
        var copy = g.AddNode(n.OpType, n.Inputs, 1, n.Domain, g.UniqueName(Prefix(n)), before: n);
        copy.CopyAttributes(n);
        g.ReplaceValue(n.Output, copy.Output);
        g.RemoveNode(n, force: true);
    }

    /// <summary>
    /// Resize-10 resized with "asymmetric" coordinates and, for nearest, floor when up-sampling and ceil when down-sampling
    /// (how ONNX Runtime runs it); Resize-11 takes roi before scales.
    /// </summary>
    private static void Resize10To11(Graph g, Node n, long to, Value? scales)
    {
        string mode = n.GetString("mode") ?? "nearest";
        n.SetAttribute("coordinate_transformation_mode", "asymmetric");
        if (mode == "nearest") n.SetAttribute("nearest_mode", NearestModeOf10(n)!);
        Value? roi = to >= 13 ? null : g.AddInitializer(Tensor.FromFloats(g.UniqueName(Prefix(n) + "_roi"), [0], []));
        SetInput(n, 1, roi);
        SetInput(n, 2, scales);
    }

    /// <summary>floor or ceil: how a nearest Resize-10 / Upsample rounds (null when its scales are not constant or mixed).</summary>
    private static string? NearestModeOf10(Node n)
    {
        var scales = n.Inputs.Count > 1 ? Constants.Of(n.Inputs[1])?.ToFloat32() : n.GetAttribute("scales")?.Proto.Floats.ToArray();
        scales ??= n.GetAttribute("scales")?.Proto.Floats.ToArray();
        if (scales is null) return null;
        bool up = scales.All(s => s >= 1), down = scales.All(s => s <= 1);
        return up ? "floor" : down ? "ceil" : null;
    }

    private static void UpsampleToResize(Graph g, Node n, long to)
    {
        string mode = n.GetString("mode") ?? "nearest";
        Value scales = n.Inputs.Count > 1 && n.Inputs[1] is { } s ? s
            : g.AddInitializer(Tensor.FromFloats(g.UniqueName(Prefix(n) + "_scales"), [n.GetAttribute("scales")!.Proto.Floats.Count],
                n.GetAttribute("scales")!.Proto.Floats.ToArray()));
        n.RemoveAttribute("scales");
        n.OpType = "Resize";
        n.SetAttribute("mode", mode == "bilinear" ? "linear" : mode);
        if (to < 11)
        {
            SetInput(n, 1, scales);
            return;
        }
        n.SetAttribute("coordinate_transformation_mode", "asymmetric");
        if (mode == "nearest") n.SetAttribute("nearest_mode", "floor");
        Value? roi = to >= 13 ? null : g.AddInitializer(Tensor.FromFloats(g.UniqueName(Prefix(n) + "_roi"), [0], []));
        SetInput(n, 1, roi);
        SetInput(n, 2, scales);
    }
}
