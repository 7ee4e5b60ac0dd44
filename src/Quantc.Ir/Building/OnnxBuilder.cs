using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Building;

/// <summary>
/// A small helper that writes nodes into an IR graph with the names a TorchScript / optimum
/// export gives them: node <c>{scope}/{Op}</c> (then <c>{Op}_1</c>, <c>{Op}_2</c>… within a scope),
/// output <c>{node}_output_{k}</c>. Names are therefore stable and readable
/// (<c>/model/layers.3/mlp/down_proj/MatMul</c>), which is what the layer map and reports show.
/// Constants are shared initializers.
/// </summary>
public sealed class OnnxBuilder
{
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Value> _constants = new(StringComparer.Ordinal);
    private readonly Stack<string> _scopes = new();

    private readonly OnnxBuilder? _constantOwner;

    /// <summary>A builder over <paramref name="graph"/>; constants go to <paramref name="constantsFrom"/>'s graph when given (a subgraph
    /// then captures them).</summary>
    public OnnxBuilder(Graph graph, OnnxBuilder? constantsFrom = null)
    {
        Graph = graph;
        _constantOwner = constantsFrom;
    }

    public Graph Graph { get; }

    /// <summary>The current scope ("" at the top).</summary>
    public string Scope => _scopes.Count == 0 ? "" : _scopes.Peek();

    /// <summary>Enters <paramref name="scope"/> (absolute when it starts with '/', else nested) until disposed.</summary>
    public IDisposable Enter(string scope)
    {
        _scopes.Push(scope.StartsWith('/') ? scope : $"{Scope}/{scope}");
        return new PopScope(_scopes);
    }

    private sealed class PopScope(Stack<string> s) : IDisposable
    {
        public void Dispose() => s.Pop();
    }

    /// <summary>Adds a node in the current scope and returns it.</summary>
    public Node AddNode(string op, IEnumerable<Value?> inputs, int outputs = 1, string domain = "", string? localName = null,
        int[]? keep = null)
    {
        string baseName = $"{Scope}/{localName ?? op}";
        int k = _counters.GetValueOrDefault(baseName);
        _counters[baseName] = k + 1;
        string name = k == 0 ? baseName : $"{baseName}_{k}";
        // Outputs not in keep are omitted (empty names), as exporters do for unused optional outputs.
        var outNames = Enumerable.Range(0, outputs).Select(i => keep is null || keep.Contains(i) ? $"{name}_output_{i}" : "");
        return Graph.AddNode(op, inputs, outputs, domain, name, outNames);
    }

    /// <summary>Adds a single-output node and returns its output.</summary>
    public Value Op(string op, params Value?[] inputs) => AddNode(op, inputs).Output;

    /// <summary>Adds a single-output node, lets <paramref name="attrs"/> set attributes, returns its output.</summary>
    public Value Op(string op, Value?[] inputs, Action<Node> attrs, string domain = "")
    {
        var n = AddNode(op, inputs, 1, domain);
        attrs(n);
        return n.Output;
    }

    /// <summary>A shared int64 constant (1-D, or a scalar when <paramref name="scalar"/>).</summary>
    public Value I64(long[] values, bool scalar = false)
    {
        if (_constantOwner is not null) return _constantOwner.I64(values, scalar);
        string key = $"i64{(scalar ? "s" : "")}:{string.Join(",", values)}";
        if (_constants.TryGetValue(key, out var v)) return v;
        var dims = scalar ? Array.Empty<long>() : [values.Length];
        v = Graph.AddInitializer(Tensor.FromValues($"val_{_constants.Count}", (int)DT.Int64, dims, values.AsSpan()),
            $"val_{_constants.Count}");
        _constants[key] = v;
        return v;
    }

    /// <summary>A shared 1-D int64 constant.</summary>
    public Value Ints(params long[] values) => I64(values);

    /// <summary>A shared float32 scalar constant.</summary>
    public Value F32(float value)
    {
        if (_constantOwner is not null) return _constantOwner.F32(value);
        string key = $"f32:{BitConverter.SingleToInt32Bits(value)}";
        if (_constants.TryGetValue(key, out var v)) return v;
        v = Graph.AddInitializer(Tensor.FromFloats($"val_{_constants.Count}", [], [value]), $"val_{_constants.Count}");
        _constants[key] = v;
        return v;
    }

    /// <summary>A graph input of element type <paramref name="elemType"/> with dims given as numbers or symbolic names.</summary>
    public Value Input(string name, DT elemType, params object[] dims) => Graph.AddInput(name, TensorType(elemType, dims));

    /// <summary>Lists <paramref name="v"/> as a graph output named <paramref name="name"/> (an Identity is added when the name
    /// differs).</summary>
    public Value Output(Value v, string name, DT elemType, params object[] dims)
    {
        if (v.Name != name)
        {
            if (v.IsGraphInput || v.IsInitializer || v.Producer is null)
                v = Graph.AddNode("Identity", [v], 1, "", $"{Scope}/{name}/Identity", [name]).Output;
            else
                Graph.RenameValue(v, name);
        }
        v.Type = TensorType(elemType, dims);
        Graph.AddOutput(v);
        return v;
    }

    /// <summary>A tensor TypeProto; dims are longs (fixed) or strings (symbolic).</summary>
    public static TypeProto TensorType(DT elemType, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                _ => throw new ArgumentException($"bad dim {d}"),
            });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)elemType, Shape = shape } };
    }
}
