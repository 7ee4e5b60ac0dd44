using Quantc.Onnx.Proto;

namespace Quantc.Ir;

/// <summary>One use of a value: input <see cref="InputIndex"/> of <see cref="Node"/>.</summary>
public readonly record struct Use(Node Node, int InputIndex);

/// <summary>
/// A named value of a graph (SSA: exactly one definition): a graph input, an initializer,
/// or a node output. Knows its producer and every use, including uses from subgraphs that
/// capture it from the outer scope.
/// </summary>
public sealed class Value
{
    internal readonly List<Use> UseList = [];

    internal Value(Graph graph, string name)
    {
        Graph = graph;
        Name = name;
    }

    /// <summary>The graph whose scope defines this value.</summary>
    public Graph Graph { get; }

    /// <summary>The name (unique across the model's scopes that can see it).</summary>
    public string Name { get; internal set; }

    /// <summary>The node whose output this is, or null for a graph input or initializer.</summary>
    public Node? Producer { get; internal set; }

    /// <summary>Index of this value among <see cref="Producer"/>'s outputs.</summary>
    public int ProducerOutputIndex { get; internal set; } = -1;

    /// <summary>Every node input that reads this value (in any scope).</summary>
    public IReadOnlyList<Use> Uses => UseList;

    /// <summary>The constant behind this value when it is an initializer.</summary>
    public Tensor? Initializer { get; internal set; }

    /// <summary>Type and shape, when known (from inputs, outputs or value_info).</summary>
    public TypeProto? Type
    {
        get => _type;
        set { _type = value; TypeChanged = true; }
    }

    private TypeProto? _type;

    /// <summary>True once <see cref="Type"/> was set after loading (entries are then rewritten on save).</summary>
    internal bool TypeChanged { get; private set; }

    internal void LoadType(TypeProto? type) => _type = type;

    /// <summary>The value_info / input / output entry as loaded (doc_string, metadata_props survive a round trip).</summary>
    internal ValueInfoProto? InfoShell { get; set; }

    /// <summary>True when listed in value_info.</summary>
    public bool HasValueInfo { get; internal set; }

    /// <summary>True when the graph lists this value among its inputs.</summary>
    public bool IsGraphInput => Graph.Inputs.Contains(this);

    /// <summary>True when the graph lists this value among its outputs.</summary>
    public bool IsGraphOutput => Graph.Outputs.Contains(this);

    /// <summary>Read by exactly one node and not a graph output: a rewrite may replace it without anyone else noticing.</summary>
    public bool IsSingleUse => UseList.Count == 1 && !IsGraphOutput;

    /// <summary>True for an initializer (a constant tensor).</summary>
    public bool IsInitializer => Initializer is not null;

    /// <summary>Element type when known (TensorProto.DataType), else 0.</summary>
    public int ElementType => Initializer?.DataType ?? (Type?.TensorType?.ElemType ?? 0);

    /// <summary>Static shape when known: dimensions as numbers, or null for a symbolic / unknown dimension.</summary>
    public long?[]? Shape
    {
        get
        {
            if (Initializer is not null) return Initializer.Dims.Select(d => (long?)d).ToArray();
            var shape = Type?.TensorType?.Shape;
            if (shape is null) return null;
            return shape.Dim.Select(d => d.HasDimValue ? (long?)d.DimValue : null).ToArray();
        }
    }

    public override string ToString() => Name;
}
