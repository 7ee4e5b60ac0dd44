using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Building;

/// <summary>
/// Writes the nodes of a rewrite into a graph: every node goes before <see cref="Before"/> (or at the
/// end), and every node and initializer is named <c>{prefix}{suffix}</c>, made unique in the model —
/// the names passes give, so a compiled model reads as the rewrite that made it
/// (<c>model.layers.0.mlp.down_proj/act_dyn_scale</c>). <see cref="OnnxBuilder"/> is its counterpart
/// for whole models with exporter names.
/// </summary>
public sealed class Emitter(Graph graph, Node? before, string prefix)
{
    public Graph Graph { get; } = graph;

    /// <summary>The node the emitted nodes go before; null: at the end.</summary>
    public Node? Before { get; } = before;

    /// <summary>The name prefix.</summary>
    public string Prefix { get; } = prefix;

    /// <summary>A unique name from the prefix and <paramref name="suffix"/>.</summary>
    public string Name(string suffix) => Graph.UniqueName(Prefix + suffix);

    /// <summary>A node named prefix + <paramref name="suffix"/>.</summary>
    public Node Node(string op, string suffix, params Value?[] inputs) => Graph.AddNode(op, inputs, name: Name(suffix), before: Before);

    /// <summary>A node in <paramref name="domain"/> named prefix + <paramref name="suffix"/>.</summary>
    public Node Node(string op, string domain, string suffix, params Value?[] inputs) =>
        Graph.AddNode(op, inputs, domain: domain, name: Name(suffix), before: Before);

    /// <summary>A node of <paramref name="outputCount"/> outputs (or one per name of <paramref name="outputNames"/>; an empty name is
    /// an omitted optional output) in <paramref name="domain"/>, named prefix + <paramref name="suffix"/>.</summary>
    public Node NodeOf(string op, string suffix, IReadOnlyList<Value?> inputs, string domain = "", int outputCount = 1,
        IEnumerable<string>? outputNames = null) =>
        Graph.AddNode(op, inputs, outputCount, domain, Name(suffix), outputNames, Before);

    /// <summary>The output of a single-output node named prefix + <paramref name="suffix"/>.</summary>
    public Value Op(string op, string suffix, params Value?[] inputs) => Node(op, suffix, inputs).Output;

    /// <summary>A float32 scalar initializer.</summary>
    public Value Float(string suffix, float value) => Graph.AddInitializer(Tensor.FromFloats(Name(suffix), [], [value]));

    /// <summary>A 1-D int64 initializer.</summary>
    public Value Int64s(string suffix, params long[] values) =>
        Graph.AddInitializer(Tensor.FromValues<long>(Name(suffix), (int)DT.Int64, [values.Length], values));

    /// <summary>An int8 scalar initializer (a zero point).</summary>
    public Value Int8(string suffix, sbyte value) =>
        Graph.AddInitializer(Tensor.FromValues(Name(suffix), (int)DT.Int8, [], (ReadOnlySpan<sbyte>)[value]));

    /// <summary>A uint8 scalar initializer (a zero point).</summary>
    public Value UInt8(string suffix, byte value) =>
        Graph.AddInitializer(Tensor.FromValues(Name(suffix), (int)DT.Uint8, [], (ReadOnlySpan<byte>)[value]));

    /// <summary><paramref name="x"/> reshaped to <paramref name="shape"/> (0 keeps a dimension, −1 infers it): shape initializer
    /// <c>{suffix}_shape</c>, node <c>{suffix}</c>.</summary>
    public Value Reshape(Value x, long[] shape, string suffix)
    {
        var s = Int64s(suffix + "_shape", shape);
        return Op("Reshape", suffix, x, s);
    }

    /// <summary>A reduction over the last axis keeping it (size 1): ReduceMax, ReduceMin… with axes initializer <c>_axes</c> made once per
    /// call.</summary>
    public Value ReduceLast(string op, string suffix, Value x, Value? axes = null)
    {
        var n = Node(op, suffix, x, axes ?? Int64s("_axes", -1L));
        n.SetAttribute("keepdims", 1L);
        return n.Output;
    }

    /// <summary>max(max|x_row|, 1e-12) per row — the last axis kept with size 1: the scale basis of per-token quantization.</summary>
    public Value RowAbsMax(Value x)
    {
        var abs = Op("Abs", "_abs", x);
        var max = ReduceLast("ReduceMax", "_max", abs);
        var eps = Float("_eps", 1e-12f);
        return Op("Max", "_floor", max, eps);
    }
}
