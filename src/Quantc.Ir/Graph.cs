using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Ir;

/// <summary>Raised when an edit or a check finds the graph inconsistent.</summary>
public sealed class GraphValidationException(IReadOnlyList<string> problems)
    : Exception($"graph is not valid: {string.Join("; ", problems.Take(5))}{(problems.Count > 5 ? $" (+{problems.Count - 5} more)" : "")}")
{
    public IReadOnlyList<string> Problems { get; } = problems;
}

/// <summary>
/// A graph (the main graph or the body of an If/Loop/Scan): ordered nodes, its inputs, outputs
/// and initializers, and a scope of named values. A subgraph sees the values of its outer
/// graphs. Every edit keeps producers and uses consistent.
/// </summary>
public sealed class Graph
{
    private readonly List<Node> _nodes = [];
    private readonly List<Value> _inputs = [];
    private readonly List<Value> _outputs = [];
    private readonly List<ValueInfoProto?> _inputShells = [];
    private readonly List<ValueInfoProto?> _outputShells = [];
    private readonly List<Value> _initializers = [];
    private readonly List<ValueInfoProto> _orphanValueInfo = [];   // value_info naming no value of this scope, kept for round trip
    private readonly List<Value> _valueInfoOrder = [];
    private readonly Dictionary<string, Value> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _sparseInitializers = new(StringComparer.Ordinal);

    internal Graph(Model? model, Graph? parent, Node? owner, string name)
    {
        Model = model;
        Parent = parent;
        OwnerNode = owner;
        Name = name;
    }

    /// <summary>The model this graph belongs to (null for a free-standing graph).</summary>
    public Model? Model { get; }
    /// <summary>The enclosing graph of a subgraph.</summary>
    public Graph? Parent { get; }
    /// <summary>The node whose attribute holds this subgraph.</summary>
    public Node? OwnerNode { get; }
    public string Name { get; set; }
    public string? DocString { get; set; }

    /// <summary>The graph as loaded minus what the IR models (keeps sparse initializers, annotations, metadata, unknown fields).</summary>
    internal GraphProto? Shell { get; set; }

    public IReadOnlyList<Node> Nodes => _nodes;
    public IReadOnlyList<Value> Inputs => _inputs;
    public IReadOnlyList<Value> Outputs => _outputs;
    /// <summary>Initializers in file order.</summary>
    public IReadOnlyList<Value> Initializers => _initializers;
    /// <summary>Every value defined in this scope.</summary>
    public IEnumerable<Value> Values => _values.Values;

    /// <summary>The value named <paramref name="name"/> in this scope or an enclosing one.</summary>
    public Value? Find(string name)
    {
        for (var g = this; g is not null; g = g.Parent)
            if (g._values.TryGetValue(name, out var v)) return v;
        return null;
    }

    /// <summary>The value named <paramref name="name"/>; throws when there is none.</summary>
    public Value this[string name] => Find(name) ?? throw new KeyNotFoundException($"no value '{name}' in graph '{Name}'");

    /// <summary>This graph and every subgraph below it, depth first.</summary>
    public IEnumerable<Graph> AllGraphs()
    {
        yield return this;
        foreach (var n in _nodes)
            foreach (var sg in n.Subgraphs)
                foreach (var g in sg.AllGraphs()) yield return g;
    }

    /// <summary>Nodes of this graph and of all subgraphs.</summary>
    public IEnumerable<Node> AllNodes() => AllGraphs().SelectMany(g => g.Nodes);

    // ------------------------------------------------------------------ names

    private NameRegistry Names => Model?.Names ?? (_localNames ??= new NameRegistry());
    private NameRegistry? _localNames;

    /// <summary>A value or node name not used anywhere in the model, derived from <paramref name="prefix"/>.</summary>
    public string UniqueName(string prefix) => Names.Unique(prefix);

    // ------------------------------------------------------------------ editing

    private Value Define(string name)
    {
        if (name.Length == 0) throw new ArgumentException("value names cannot be empty");
        if (_values.ContainsKey(name)) throw new InvalidOperationException($"value '{name}' is already defined in graph '{Name}'");
        var v = new Value(this, name);
        _values[name] = v;
        Names.Add(name);
        Touch();
        return v;
    }

    /// <summary>Adds a graph input.</summary>
    public Value AddInput(string name, TypeProto? type)
    {
        var v = Define(name);
        v.Type = type;
        _inputs.Add(v);
        _inputShells.Add(null);
        return v;
    }

    /// <summary>Lists <paramref name="value"/> as a graph output.</summary>
    public void AddOutput(Value value)
    {
        CheckVisible(value, null);
        _outputs.Add(value);
        _outputShells.Add(null);
        Touch();
    }

    /// <summary>Replaces graph output <paramref name="index"/> by another value (keeping the entry's doc_string).</summary>
    public void SetOutput(int index, Value value)
    {
        CheckVisible(value, null);
        _outputs[index] = value;
        Touch();
    }

    /// <summary>Adds an initializer; its name is <paramref name="name"/> or made unique from the tensor's name.</summary>
    public Value AddInitializer(Tensor tensor, string? name = null)
    {
        var v = Define(name ?? UniqueName(tensor.Name.Length > 0 ? tensor.Name : "const"));
        tensor = Model?.Spill(tensor) ?? tensor;
        tensor.Name = v.Name;
        v.Initializer = tensor;
        _initializers.Add(v);
        return v;
    }

    /// <summary>Replaces the constant of an initializer value.</summary>
    public void SetInitializer(Value value, Tensor tensor)
    {
        if (value.Initializer is null) throw new InvalidOperationException($"'{value.Name}' is not an initializer");
        tensor = Model?.Spill(tensor) ?? tensor;
        tensor.Name = value.Name;
        value.Initializer = tensor;
        Touch();
    }

    /// <summary>
    /// Adds a node. Outputs get fresh unique names from <paramref name="outputNames"/> (or from
    /// the node name). The node goes before <paramref name="before"/>, or at the end.
    /// </summary>
    public Node AddNode(string opType, IEnumerable<Value?> inputs, int outputCount = 1, string domain = "",
        string? name = null, IEnumerable<string>? outputNames = null, Node? before = null)
    {
        var nodeName = name ?? UniqueName(opType);
        Names.Add(nodeName);
        var n = new Node(this, opType, domain, nodeName, null);
        var names = outputNames?.ToList();
        for (int i = 0; i < (names?.Count ?? outputCount); i++)
        {
            string outName = names is not null ? (names[i].Length == 0 ? "" : names[i])
                : UniqueName($"{nodeName}_out{(i == 0 ? "" : i.ToString())}");
            if (outName.Length == 0) { n.OutputList.Add(null); continue; }
            var v = Define(outName);
            v.Producer = n;
            v.ProducerOutputIndex = i;
            n.OutputList.Add(v);
        }
        foreach (var input in inputs) n.AddInput(input);
        Insert(n, before);
        return n;
    }

    private void Insert(Node n, Node? before)
    {
        Touch();
        if (before is null) { _nodes.Add(n); return; }
        int i = _nodes.IndexOf(before);
        if (i < 0) throw new ArgumentException($"node {before} is not in graph '{Name}'");
        _nodes.Insert(i, n);
    }

    /// <summary>Moves <paramref name="node"/> so that it stands right before <paramref name="before"/>.</summary>
    public void MoveBefore(Node node, Node before)
    {
        _nodes.Remove(node);
        Insert(node, before);
    }

    /// <summary>
    /// Removes a node. Its outputs must be unused (rewire first with <see cref="ReplaceAllUses"/>)
    /// unless <paramref name="force"/>: then users of its outputs are left reading nothing, which
    /// <see cref="Validate"/> reports.
    /// </summary>
    public void RemoveNode(Node node, bool force = false)
    {
        if (!_nodes.Contains(node)) throw new ArgumentException($"node {node} is not in graph '{Name}'");
        foreach (var o in node.OutputList)
        {
            if (o is null) continue;
            if (!force && (o.UseList.Count > 0 || _outputs.Contains(o)))
                throw new InvalidOperationException($"cannot remove {node}: its output '{o.Name}' is still used");
        }
        for (int i = 0; i < node.InputList.Count; i++) node.SetInput(i, null);
        foreach (var sg in node.Subgraphs) sg.DetachOuterUses();
        foreach (var o in node.OutputList)
        {
            if (o is null) continue;
            o.Producer = null;
            _values.Remove(o.Name);
            _valueInfoOrder.Remove(o);
        }
        _nodes.Remove(node);
        Touch();
    }

    private void DetachOuterUses()
    {
        foreach (var n in _nodes)
        {
            for (int i = 0; i < n.InputList.Count; i++)
                if (n.InputList[i] is { } v && !ReferenceEquals(v.Graph, this)) n.SetInput(i, null);
            foreach (var sg in n.Subgraphs) sg.DetachOuterUses();
        }
    }

    /// <summary>Points every use of <paramref name="old"/> at <paramref name="replacement"/> (graph outputs too when asked).</summary>
    public void ReplaceAllUses(Value old, Value replacement, bool includeGraphOutputs = false, Node? except = null)
    {
        foreach (var use in old.UseList.ToList())
        {
            if (ReferenceEquals(use.Node, except)) continue;
            use.Node.SetInput(use.InputIndex, replacement);
        }
        if (includeGraphOutputs)
            for (var g = old.Graph; ; )
            {
                for (int i = 0; i < g._outputs.Count; i++)
                    if (ReferenceEquals(g._outputs[i], old)) { g._outputs[i] = replacement; Touch(); }
                break;
            }
    }

    /// <summary>Renames a value to a fresh unique name derived from <paramref name="prefix"/>; returns the name.</summary>
    public string RenameValueUnique(Value value, string prefix)
    {
        string name = UniqueName(prefix);
        RenameValue(value, name, reserved: true);
        return name;
    }

    /// <summary>
    /// Puts <paramref name="replacement"/> in <paramref name="old"/>'s place: every use and graph output, its name
    /// (<paramref name="old"/> is renamed to a fresh name, so reports, verify and downstream tools still find the
    /// tensor) and, where the replacement has none, its type. For rewrites that swap a subgraph for one op.
    /// </summary>
    public void ReplaceValue(Value old, Value replacement)
    {
        string name = old.Name;
        RenameValueUnique(old, name + "_replaced");
        RenameValue(replacement, name, reserved: true);
        if (replacement.Type is null && old.Type is { } t) replacement.Type = t;
        ReplaceAllUses(old, replacement, includeGraphOutputs: true);
    }

    /// <summary>Renames a value (and its initializer); the new name must be free in the model.</summary>
    public void RenameValue(Value value, string newName) => RenameValue(value, newName, reserved: false);

    private void RenameValue(Value value, string newName, bool reserved)
    {
        if (value.Name == newName) return;
        var g = value.Graph;
        if (g.Find(newName) is not null || (!reserved && Names.Contains(newName)))
            throw new InvalidOperationException($"cannot rename '{value.Name}' to '{newName}': the name is taken");
        g._values.Remove(value.Name);
        value.Name = newName;
        g._values[newName] = value;
        Names.Add(newName);
        Touch();
        if (value.Initializer is not null) value.Initializer.Name = newName;
    }

    /// <summary>Removes an unused initializer.</summary>
    public void RemoveInitializer(Value value)
    {
        if (value.UseList.Count > 0 || _outputs.Contains(value))
            throw new InvalidOperationException($"initializer '{value.Name}' is still used");
        _initializers.Remove(value);
        value.Initializer = null;
        Touch();
        if (!_inputs.Contains(value)) _values.Remove(value.Name);
    }

    /// <summary>Removes nodes and initializers that no graph output depends on (nodes with subgraphs or no outputs are kept).</summary>
    public int RemoveDeadCode()
    {
        int removed = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            for (int i = _nodes.Count - 1; i >= 0; i--)
            {
                var n = _nodes[i];
                if (n.OutputList.Count == 0) continue;
                if (n.OutputList.All(o => o is null || (o.UseList.Count == 0 && !_outputs.Contains(o))))
                {
                    RemoveNode(n);
                    removed++;
                    changed = true;
                }
            }
        }
        foreach (var v in _initializers.ToList())
            if (v.UseList.Count == 0 && !_outputs.Contains(v) && !_inputs.Contains(v)) { RemoveInitializer(v); removed++; }
        return removed;
    }

    /// <summary>Counts an edit (see <see cref="Quantc.Ir.Model.Revision"/>).</summary>
    internal void Touch() => Model?.Touch();

    internal void CheckVisible(Value value, Node? user)
    {
        for (var g = this; g is not null; g = g.Parent)
            if (g._values.TryGetValue(value.Name, out var v) && ReferenceEquals(v, value)) return;
        throw new InvalidOperationException($"value '{value.Name}' is not visible from graph " +
            $"'{Name}'{(user is null ? "" : $" (used by {user})")}");
    }

    // ------------------------------------------------------------------ order and validation

    /// <summary>Nodes in a topological order (stable: keeps file order where it can); throws on a cycle.</summary>
    public IReadOnlyList<Node> TopologicalOrder()
    {
        var flow = new Dataflow(this);
        return flow.StableOrder() ?? throw new GraphValidationException([Dataflow.Describe(this, flow.FindCycle()!)]);
    }

    /// <summary>Reorders the node list topologically.</summary>
    public void SortTopologically()
    {
        var order = TopologicalOrder();
        if (order.SequenceEqual(_nodes)) return;
        _nodes.Clear();
        _nodes.AddRange(order);
        Touch();
    }

    /// <summary>
    /// A cycle among this graph's nodes (a subgraph's reads of outer values count as reads by its owner;
    /// cycles inside subgraphs are theirs to report): its nodes in dataflow order, the first one reading
    /// the last one's output; null when there is none.
    /// </summary>
    public IReadOnlyList<Node>? FindCycle() => new Dataflow(this).FindCycle();

    /// <summary>"graph 'main' has a cycle: a → b → a" for a cycle <see cref="FindCycle"/> found.</summary>
    public string DescribeCycle(IReadOnlyList<Node> cycle) => Dataflow.Describe(this, cycle);

    /// <summary>Values a node depends on: its inputs, and outer values its subgraphs capture.</summary>
    public static IEnumerable<Value> Dependencies(Node node)
    {
        foreach (var v in node.InputList) if (v is not null) yield return v;
        foreach (var sg in node.Subgraphs)
            foreach (var v in sg.CapturedValues()) yield return v;
    }

    /// <summary>Values of enclosing scopes that this graph (or its subgraphs) reads.</summary>
    public IEnumerable<Value> CapturedValues()
    {
        var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        foreach (var g in AllGraphs())
        {
            foreach (var n in g._nodes)
                foreach (var v in n.InputList)
                    if (v is not null && !IsWithin(v.Graph) && seen.Add(v)) yield return v;
            foreach (var v in g._outputs)
                if (!IsWithin(v.Graph) && seen.Add(v)) yield return v;
        }
    }

    private bool IsWithin(Graph g)
    {
        for (var x = g; x is not null; x = x.Parent) if (ReferenceEquals(x, this)) return true;
        return false;
    }

    /// <summary>Every consistency problem found (empty when valid), in this graph and its subgraphs.</summary>
    public List<string> FindProblems()
    {
        var problems = new List<string>();
        foreach (var g in AllGraphs()) g.FindLocalProblems(problems);
        return problems;
    }

    /// <summary>Throws <see cref="GraphValidationException"/> unless the graph is consistent: one definition per value, no dangling
    /// references, use lists in step, no cycles.</summary>
    public void Validate()
    {
        var problems = FindProblems();
        if (problems.Count > 0) throw new GraphValidationException(problems);
    }

    private void FindLocalProblems(List<string> problems)
    {
        var defined = new Dictionary<string, string>(StringComparer.Ordinal);
        void Def(Value v, string how)
        {
            if (defined.TryGetValue(v.Name, out var prev) && !(prev == "input" && how == "initializer"))
                problems.Add($"'{v.Name}' is defined twice in graph '{Name}' ({prev} and {how})");
            defined[v.Name] = how;
            if (!_values.TryGetValue(v.Name, out var reg) || !ReferenceEquals(reg, v))
                problems.Add($"'{v.Name}' is not registered in the scope of graph '{Name}'");
        }
        foreach (var v in _inputs) Def(v, "input");
        foreach (var v in _initializers)
        {
            Def(v, "initializer");
            if (v.Initializer is null) problems.Add($"initializer '{v.Name}' has no tensor");
        }
        foreach (var n in _nodes)
        {
            if (!ReferenceEquals(n.Graph, this)) problems.Add($"node {n} thinks it belongs to another graph");
            for (int i = 0; i < n.OutputList.Count; i++)
            {
                if (n.OutputList[i] is not { } o) continue;
                Def(o, $"output of {n}");
                if (!ReferenceEquals(o.Producer, n) || o.ProducerOutputIndex != i)
                    problems.Add($"'{o.Name}' does not record {n} as its producer");
            }
        }
        foreach (var n in _nodes)
            for (int i = 0; i < n.InputList.Count; i++)
            {
                if (n.InputList[i] is not { } v) continue;
                if (Find(v.Name) is not { } found || !ReferenceEquals(found, v))
                    problems.Add($"{n} reads '{v.Name}', which is not defined in its scope");
                else if (v.Producer is { } p && !p.Graph.Nodes.Contains(p))
                    problems.Add($"{n} reads '{v.Name}', whose producer {p} was removed");
                if (!v.UseList.Contains(new Use(n, i)))
                    problems.Add($"'{v.Name}' does not list its use by {n} (input {i})");
            }
        foreach (var v in _values.Values)
            foreach (var u in v.UseList)
                if (u.InputIndex >= u.Node.InputList.Count || !ReferenceEquals(u.Node.InputList[u.InputIndex], v))
                    problems.Add($"'{v.Name}' lists a stale use by {u.Node}");
        foreach (var v in _outputs)
            if (Find(v.Name) is not { } f || !ReferenceEquals(f, v) || (v.Producer is { } p && !p.Graph.Nodes.Contains(p)))
                problems.Add($"graph output '{v.Name}' is not defined");
        if (FindCycle() is { } cycle) problems.Add(DescribeCycle(cycle));
    }

    // ------------------------------------------------------------------ conversion

    internal static Graph FromProto(GraphProto proto, Model? model, Graph? parent, Node? owner, OnnxModelFile? file)
    {
        var g = new Graph(model, parent, owner, proto.Name);
        var shell = proto.Clone();
        shell.Node.Clear();
        shell.Initializer.Clear();
        shell.Input.Clear();
        shell.Output.Clear();
        shell.ValueInfo.Clear();
        g.Shell = shell;

        foreach (var vi in proto.Input)
        {
            if (g._values.ContainsKey(vi.Name)) throw new BadInputException($"graph '{proto.Name}': input '{vi.Name}' is listed twice");
            var v = g.Define(vi.Name);
            v.LoadType(vi.Type);
            g._inputs.Add(v);
            g._inputShells.Add(vi);
        }
        foreach (var t in proto.Initializer)
        {
            if (!g._values.TryGetValue(t.Name, out var v) || v.Initializer is not null || !g._inputs.Contains(v))
            {
                if (g._values.ContainsKey(t.Name))
                    throw new BadInputException($"graph '{proto.Name}': initializer '{t.Name}' is defined twice");
                v = g.Define(t.Name);
            }
            v.Initializer = Tensor.FromProto(t, file?.ExternalDataOf(t));
            g._initializers.Add(v);
        }
        foreach (var s in proto.SparseInitializer)
        {
            string name = s.Values?.Name ?? "";
            if (name.Length == 0) continue;
            g._sparseInitializers.Add(name);
            if (!g._values.ContainsKey(name)) g.Define(name);
        }

        // Pass 1: nodes and their outputs, so that inputs (and subgraphs) can refer forward.
        var nodes = new List<(Node Node, NodeProto Proto)>(proto.Node.Count);
        foreach (var np in proto.Node)
        {
            var nshell = np.Clone();
            nshell.Input.Clear();
            nshell.Output.Clear();
            nshell.Attribute.Clear();
            var n = new Node(g, np.OpType, np.Domain, np.Name, nshell);
            if (np.Name.Length > 0) g.Names.Add(np.Name);
            for (int i = 0; i < np.Output.Count; i++)
            {
                string o = np.Output[i];
                if (o.Length == 0) { n.OutputList.Add(null); continue; }
                if (g._values.ContainsKey(o))
                    throw new BadInputException($"graph '{proto.Name}': value '{o}' is produced by node '{np.Name}' ({np.OpType}) but " +
                        $"already defined");
                var v = g.Define(o);
                v.Producer = n;
                v.ProducerOutputIndex = i;
                n.OutputList.Add(v);
            }
            g._nodes.Add(n);
            nodes.Add((n, np));
        }
        // Pass 2: attributes (with subgraphs) and inputs.
        foreach (var (n, np) in nodes)
        {
            foreach (var a in np.Attribute)
            {
                if (a.G is null && a.Graphs.Count == 0) { n.AttributeList.Add(new Attribute(a, null, null)); continue; }
                var ashell = a.Clone();
                ashell.G = null;
                ashell.Graphs.Clear();
                Graph? sub = a.G is null ? null : FromProto(a.G, model, g, n, file);
                Graph[]? subs = a.Graphs.Count == 0 ? null : a.Graphs.Select(x => FromProto(x, model, g, n, file)).ToArray();
                n.AttributeList.Add(new Attribute(ashell, sub, subs));
            }
            foreach (var name in np.Input)
            {
                if (name.Length == 0) { n.InputList.Add(null); continue; }
                var v = g.Find(name) ?? throw new BadInputException(
                    $"graph '{proto.Name}': node '{np.Name}' ({np.OpType}) reads '{name}', which nothing defines");
                n.InputList.Add(v);
                v.UseList.Add(new Use(n, n.InputList.Count - 1));
            }
        }
        foreach (var vi in proto.Output)
        {
            var v = g.Find(vi.Name) ?? throw new BadInputException($"graph '{proto.Name}': output '{vi.Name}' is not defined by anything");
            if (v.Type is null) v.LoadType(vi.Type);
            g._outputs.Add(v);
            g._outputShells.Add(vi);
        }
        foreach (var vi in proto.ValueInfo)
        {
            if (g._values.TryGetValue(vi.Name, out var v) && !v.HasValueInfo)
            {
                v.HasValueInfo = true;
                v.InfoShell = vi;
                if (v.Type is null || (!g._inputs.Contains(v) && !g._outputs.Contains(v))) v.LoadType(vi.Type);
                g._valueInfoOrder.Add(v);
            }
            else
            {
                g._orphanValueInfo.Add(vi);
                g._valueInfoOrder.Add(null!); // placeholder keeps the original order
            }
        }
        return g;
    }

    internal GraphProto ToProto(SaveContext ctx)
    {
        var p = Shell?.Clone() ?? new GraphProto();
        p.Name = Name;
        if (DocString is not null) p.DocString = DocString;
        foreach (var n in _nodes) p.Node.Add(NodeToProto(n, ctx));
        foreach (var v in _initializers)
        {
            var t = v.Initializer!.ToProto(v.Name, out var payload);
            if (payload is not null) ctx.Payloads[t] = payload;
            p.Initializer.Add(t);
        }
        for (int i = 0; i < _inputs.Count; i++) p.Input.Add(InfoFor(_inputs[i], _inputShells[i]));
        for (int i = 0; i < _outputs.Count; i++) p.Output.Add(InfoFor(_outputs[i], _outputShells[i]));
        int orphan = 0;
        foreach (var v in _valueInfoOrder)
        {
            if (v is null) { p.ValueInfo.Add(_orphanValueInfo[orphan++]); continue; }
            if (!v.HasValueInfo || !_values.ContainsKey(v.Name)) continue;
            p.ValueInfo.Add(InfoFor(v, v.InfoShell));
        }
        return p;
    }

    private static ValueInfoProto InfoFor(Value v, ValueInfoProto? shell)
    {
        if (shell is not null && shell.Name == v.Name && !v.TypeChanged) return shell;
        var info = shell?.Clone() ?? new ValueInfoProto();
        info.Name = v.Name;
        if (v.Type is not null) info.Type = v.Type;
        else info.Type = null;
        return info;
    }

    private static NodeProto NodeToProto(Node n, SaveContext ctx)
    {
        var p = n.Shell?.Clone() ?? new NodeProto();
        p.OpType = n.OpType;
        if (n.Domain.Length > 0 || p.HasDomain) p.Domain = n.Domain;
        if (n.Name.Length > 0 || p.HasName) p.Name = n.Name;
        foreach (var v in n.InputList) p.Input.Add(v?.Name ?? "");
        foreach (var v in n.OutputList) p.Output.Add(v?.Name ?? "");
        foreach (var a in n.AttributeList)
        {
            if (a.Graph is null && a.Graphs is null) { p.Attribute.Add(a.Proto); continue; }
            var ap = a.Proto.Clone();
            if (a.Graph is not null) ap.G = a.Graph.ToProto(ctx);
            if (a.Graphs is not null) ap.Graphs.AddRange(a.Graphs.Select(x => x.ToProto(ctx)));
            p.Attribute.Add(ap);
        }
        return p;
    }
}

/// <summary>Collects, during a save, the bytes of tensors whose proto does not hold them.</summary>
internal sealed class SaveContext
{
    public Dictionary<TensorProto, TensorData> Payloads { get; } = new(ReferenceEqualityComparer.Instance);
}

/// <summary>Names in use across a model's scopes, with unique-name generation.</summary>
public sealed class NameRegistry
{
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);

    public void Add(string name) => _names.Add(name);
    public bool Contains(string name) => _names.Contains(name);

    /// <summary>A name not yet used: <paramref name="prefix"/> itself if free, else prefix_1, prefix_2...</summary>
    public string Unique(string prefix)
    {
        if (prefix.Length == 0) prefix = "v";
        if (_names.Add(prefix)) return prefix;
        int k = _counters.GetValueOrDefault(prefix);
        string candidate;
        do candidate = $"{prefix}_{++k}"; while (!_names.Add(candidate));
        _counters[prefix] = k;
        return candidate;
    }
}
