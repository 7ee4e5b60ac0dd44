using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Ir;

/// <summary>
/// A model: its main graph, opset imports and metadata. Functions and training info are kept
/// as loaded. Load with <see cref="Load"/>, save with <see cref="Save"/>; dispose to release the
/// memory maps of external data.
/// </summary>
public sealed class Model : IDisposable
{
    private readonly ModelProto _shell;

    private Model(ModelProto shell, OnnxModelFile? file)
    {
        _shell = shell;
        File = file;
        Graph = null!;
    }

    /// <summary>The file this model was read from (owns the external data maps), if any.</summary>
    public OnnxModelFile? File { get; }

    internal NameRegistry Names { get; } = new();

    private SpillFile? _spill;

    /// <summary>
    /// Tensors that passes make of at least this many bytes go to a temporary spill file as they become initializers
    /// (<see cref="SpillFile"/>: read back with positioned reads, so a rewritten model of any size costs page cache, not
    /// resident memory); <see cref="long.MaxValue"/> keeps them in memory. The default, 1 MiB, is the size from which the writer
    /// puts tensors in external data anyway, so the saved model is the same either way.
    /// </summary>
    public long SpillMinBytes { get; set; } = 1 << 20;

    /// <summary>Bytes written to the spill file so far.</summary>
    public long SpilledBytes => _spill?.Length ?? 0;

    /// <summary>The spill file for <paramref name="bytes"/> bytes of data a compile made (opened on first use), or null when they
    /// stay in memory (fewer than <see cref="SpillMinBytes"/>).</summary>
    public SpillFile? SpillFileFor(long bytes) => bytes < SpillMinBytes ? null : _spill ??= new SpillFile();

    internal Tensor Spill(Tensor t)
    {
        if (t.SourceProto is not null || t.IsExternal || SpillFileFor(t.ByteLength) is not { } file) return t;
        return t.SpilledTo(file, SpillMinBytes);
    }

    /// <summary>
    /// Counts the edits to the model's graphs (nodes, inputs, initializers, outputs, names,
    /// attributes): whoever caches what it found in the graph (the pass manager's statistics, a
    /// model map) compares versions instead of trusting what a pass says it did.
    /// </summary>
    public long Revision { get; private set; }

    internal void Touch() => Revision++;

    public Graph Graph { get; private set; }

    public long IrVersion { get => _shell.IrVersion; set => _shell.IrVersion = value; }
    public string ProducerName { get => _shell.ProducerName; set => _shell.ProducerName = value; }
    public string ProducerVersion { get => _shell.ProducerVersion; set => _shell.ProducerVersion = value; }
    public string DocString { get => _shell.DocString; set => _shell.DocString = value; }

    /// <summary>Opset imports (domain → version), in file order.</summary>
    public IReadOnlyList<(string Domain, long Version)> Opsets => _shell.OpsetImport.Select(o => (o.Domain, o.Version)).ToList();

    /// <summary>The imported version of <paramref name="domain"/> ("" is ONNX), or null.</summary>
    public long? OpsetVersion(string domain)
    {
        foreach (var o in _shell.OpsetImport)
            if (o.Domain == domain || (domain is "" or "ai.onnx" && o.Domain is "" or "ai.onnx")) return o.Version;
        return null;
    }

    /// <summary>Imports <paramref name="domain"/> at <paramref name="version"/> (raises an existing lower import).</summary>
    public void SetOpset(string domain, long version)
    {
        foreach (var o in _shell.OpsetImport)
            if (o.Domain == domain) { if (o.Version < version) o.Version = version; return; }
        _shell.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
    }

    /// <summary>metadata_props as a read-only view.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Metadata =>
        _shell.MetadataProps.Select(p => KeyValuePair.Create(p.Key, p.Value)).ToList();

    /// <summary>Sets a metadata_props entry (replacing one with the same key).</summary>
    public void SetMetadata(string key, string value)
    {
        foreach (var p in _shell.MetadataProps) if (p.Key == key) { p.Value = value; return; }
        _shell.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
    }

    /// <summary>Model-local functions as loaded.</summary>
    public IReadOnlyList<FunctionProto> Functions => _shell.Functions;

    /// <summary>Reads a model (external data memory-mapped, nothing loaded until touched).</summary>
    public static Model Load(string path, OnnxReadOptions? options = null)
    {
        var file = OnnxModelFile.Load(path, options);
        try { return FromFile(file); }
        catch { file.Dispose(); throw; }
    }

    /// <summary>Builds the IR over a model file already read. A malformed graph (empty or duplicate names, dangling references...) is a
    /// <see cref="BadInputException"/>.</summary>
    public static Model FromFile(OnnxModelFile file)
    {
        try { return FromProto(file.Proto, file); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException or OverflowException
            or IndexOutOfRangeException)
        {
            throw new BadInputException($"{file.Path}: malformed graph ({e.Message})", e);
        }
    }

    /// <summary>
    /// Builds the IR over a protobuf (external tensors resolved through <paramref name="file"/>);
    /// a graph with a cycle is a <see cref="BadInputException"/> naming it.
    /// </summary>
    public static Model FromProto(ModelProto proto, OnnxModelFile? file = null)
    {
        // Clone everything but the graph (which the IR takes over) without copying the graph.
        var graph = proto.Graph;
        proto.Graph = null;
        ModelProto shell;
        try { shell = proto.Clone(); }
        finally { proto.Graph = graph; }
        var m = new Model(shell, file);
        m.Graph = Graph.FromProto(proto.Graph ?? new GraphProto(), m, null, null, file);
        foreach (var g in m.Graph.AllGraphs())
            if (g.FindCycle() is { } cycle)
                throw new BadInputException($"{(file is null ? "" : file.Path + ": ")}{g.DescribeCycle(cycle)}");
        return m;
    }

    /// <summary>A new empty model (IR version 10, ONNX opset <paramref name="opset"/>).</summary>
    public static Model Create(string graphName = "main", long opset = 21, long irVersion = 10)
    {
        var shell = new ModelProto { IrVersion = irVersion, ProducerName = "quantc", ProducerVersion = Version };
        shell.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        var m = new Model(shell, null);
        m.Graph = new Graph(m, null, null, graphName);
        return m;
    }

    /// <summary>quantc's version string.</summary>
    public static string Version => typeof(Model).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>The model as a protobuf, plus the bytes of tensors the proto does not hold.</summary>
    public (ModelProto Proto, Func<TensorProto, TensorData?> Payload) ToProto()
    {
        var ctx = new SaveContext();
        var p = _shell.Clone();
        p.Graph = Graph.ToProto(ctx);
        TensorData? Payload(TensorProto t) => ctx.Payloads.TryGetValue(t, out var d) ? d : File?.ExternalDataOf(t);
        return (p, Payload);
    }

    /// <summary>Writes the model atomically (see <see cref="OnnxModelWriter"/>).</summary>
    public OnnxModelWriter.Result Save(string path, OnnxWriteOptions? options = null)
    {
        var (proto, payload) = ToProto();
        return OnnxModelWriter.Save(proto, path, payload, options);
    }

    public void Dispose()
    {
        File?.Dispose();
        _spill?.Dispose();
    }
}
