using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Ir;

/// <summary>An attribute of a node; graph-valued attributes hold IR subgraphs.</summary>
public sealed class Attribute
{
    internal Attribute(AttributeProto proto, Graph? graph, Graph[]? graphs)
    {
        Proto = proto;
        Graph = graph;
        Graphs = graphs;
    }

    /// <summary>The attribute as stored (for graph attributes, the subgraphs live in <see cref="Graph"/>/<see cref="Graphs"/>).</summary>
    public AttributeProto Proto { get; }
    public string Name => Proto.Name;
    public AttributeProto.Types.AttributeType Type => Proto.Type;
    public Graph? Graph { get; }
    public Graph[]? Graphs { get; }

    /// <summary>An attribute that holds no subgraph.</summary>
    public static Attribute Of(AttributeProto proto)
    {
        if (proto.G is not null || proto.Graphs.Count > 0) throw new ArgumentException("use Node.SetSubgraph for graph attributes");
        return new Attribute(proto, null, null);
    }
}

/// <summary>An operator application: op type and domain, inputs, outputs and attributes.</summary>
public sealed class Node
{
    internal readonly List<Value?> InputList = [];
    internal readonly List<Value?> OutputList = [];
    internal readonly List<Attribute> AttributeList = [];

    internal Node(Graph graph, string opType, string domain, string name, NodeProto? shell)
    {
        Graph = graph;
        OpType = opType;
        Domain = domain;
        Name = name;
        Shell = shell;
    }

    /// <summary>The graph this node belongs to.</summary>
    public Graph Graph { get; internal set; }
    public string OpType { get => _opType; set { _opType = value; Graph?.Touch(); } }
    private string _opType = "";

    /// <summary>Operator domain ("" is the default ONNX domain).</summary>
    public string Domain { get => _domain; set { _domain = value; Graph?.Touch(); } }
    private string _domain = "";
    public string Name { get; set; }

    /// <summary>The node as loaded, minus what the IR models (inputs, outputs, attributes); keeps doc_string, metadata, unknown
    /// fields.</summary>
    internal NodeProto? Shell { get; set; }

    /// <summary>Inputs; null marks an omitted optional input.</summary>
    public IReadOnlyList<Value?> Inputs => InputList;

    /// <summary>Outputs; null marks an omitted optional output.</summary>
    public IReadOnlyList<Value?> Outputs => OutputList;

    public IReadOnlyList<Attribute> Attributes => AttributeList;

    /// <summary>The first output (most ops have exactly one).</summary>
    public Value Output => OutputList[0] ?? throw new InvalidOperationException($"node {this} has no first output");

    /// <summary>True for the default ONNX domain ("" or "ai.onnx").</summary>
    public bool IsOnnxDomain => Domain is "" or "ai.onnx";

    /// <summary>True when this node is <paramref name="opType"/> in <paramref name="domain"/> (default domain: "" or "ai.onnx").</summary>
    public bool Is(string opType, string domain = "") =>
        OpType == opType && (domain is "" or "ai.onnx" ? IsOnnxDomain : Domain == domain);

    public Attribute? GetAttribute(string name) => AttributeList.FirstOrDefault(a => a.Name == name);
    public long GetInt(string name, long fallback) => GetAttribute(name)?.Proto is { } a && a.HasI ? a.I : fallback;
    public float GetFloat(string name, float fallback) => GetAttribute(name)?.Proto is { } a && a.HasF ? a.F : fallback;
    public string? GetString(string name) => GetAttribute(name)?.Proto is { } a && a.HasS ? a.S.ToStringUtf8() : null;
    public IReadOnlyList<long>? GetInts(string name) => GetAttribute(name)?.Proto.Ints;

    /// <summary>The tensor attribute <paramref name="name"/> (e.g. a Constant's value).</summary>
    public Tensor? GetTensor(string name) =>
        GetAttribute(name)?.Proto.T is { } t ? Tensor.FromProto(t, Graph.Model?.File?.ExternalDataOf(t)) : null;

    /// <summary>Copies every attribute of <paramref name="from"/> (none holding a subgraph) onto this node.</summary>
    public void CopyAttributes(Node from)
    {
        foreach (var a in from.Attributes) SetAttribute(a.Proto.Clone());
    }

    /// <summary>Sets (adds or replaces) an attribute that holds no subgraph.</summary>
    public void SetAttribute(AttributeProto proto)
    {
        RemoveAttribute(proto.Name);
        AttributeList.Add(Attribute.Of(proto));
        Graph.Touch();
    }

    public void SetAttribute(string name, long value) =>
        SetAttribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
    public void SetAttribute(string name, float value) =>
        SetAttribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });
    public void SetAttribute(string name, string value) =>
        SetAttribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String,
        S = Google.Protobuf.ByteString.CopyFromUtf8(value) });
    public void SetAttribute(string name, IEnumerable<long> values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        SetAttribute(a);
    }

    public bool RemoveAttribute(string name)
    {
        bool removed = AttributeList.RemoveAll(a => a.Name == name) > 0;
        if (removed) Graph.Touch();
        return removed;
    }

    /// <summary>
    /// Creates an empty subgraph held by the graph attribute <paramref name="name"/> (replacing an
    /// attribute of that name) and returns it, to be filled with inputs, nodes and outputs (a Scan
    /// or Loop body, an If branch). The subgraph sees the values of this node's graph.
    /// </summary>
    public Graph SetSubgraph(string name, string graphName)
    {
        RemoveAttribute(name);
        var g = new Graph(Graph.Model, Graph, this, graphName);
        AttributeList.Add(new Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Graph }, g, null));
        return g;
    }

    /// <summary>Subgraphs held by this node's attributes (If branches, Loop/Scan bodies).</summary>
    public IEnumerable<Graph> Subgraphs =>
        AttributeList.SelectMany(a => a.Graph is not null ? [a.Graph] : a.Graphs ?? []);

    /// <summary>Replaces input <paramref name="index"/> (null: omit it), keeping use lists consistent.</summary>
    public void SetInput(int index, Value? value)
    {
        var old = InputList[index];
        if (ReferenceEquals(old, value)) return;
        if (old is not null) old.UseList.Remove(new Use(this, index));
        InputList[index] = value;
        Graph.Touch();
        if (value is not null)
        {
            Graph.CheckVisible(value, this);
            value.UseList.Add(new Use(this, index));
        }
    }

    /// <summary>Appends an input.</summary>
    public void AddInput(Value? value)
    {
        InputList.Add(null);
        SetInput(InputList.Count - 1, value);
    }

    public override string ToString() => Name.Length > 0 ? $"{OpType}({Name})" : $"{OpType}→{OutputList.FirstOrDefault()?.Name}";
}
