using System.Text;
using System.Text.Json;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Core.Inspection;

/// <summary>One graph input or output: name, element type and shape (numbers, or symbolic names, or "?").</summary>
public sealed record IoEntry(string Name, string ElementType, IReadOnlyList<string>? Shape);

/// <summary>Parameters of one element type.</summary>
public sealed record DtypeTotals(string ElementType, int Tensors, long Elements, long Bytes);

/// <summary>One external data file a model uses.</summary>
public sealed record ExternalFileEntry(string Location, long FileBytes, int Tensors, long TensorBytes);

/// <summary>One recognised linear layer.</summary>
public sealed record LinearLayerEntry(string Name, string Op, long InFeatures, long OutFeatures, bool HasBias, string? FedBy);

/// <summary>What <c>quantc inspect</c> reports about a model.</summary>
public sealed record ModelSummary(
    string Path,
    long FileBytes,
    long IrVersion,
    string Producer,
    IReadOnlyList<(string Domain, long Version)> Opsets,
    IReadOnlyList<IoEntry> Inputs,
    IReadOnlyList<IoEntry> Outputs,
    int NodeCount,
    int SubgraphCount,
    IReadOnlyList<KeyValuePair<string, int>> OpHistogram,
    IReadOnlyList<DtypeTotals> Parameters,
    IReadOnlyList<ExternalFileEntry> ExternalData,
    IReadOnlyList<LinearLayerEntry> LinearLayers)
{
    /// <summary>The quantized linear layers (<see cref="Inspection.QuantizedLayers"/>); the float ones are in <see
    /// cref="LinearLayers"/>.</summary>
    public IReadOnlyList<QuantizedLayerEntry> QuantizedLayers { get; init; } = [];

    /// <summary>Total parameter count over all element types.</summary>
    public long TotalParameters => Parameters.Sum(p => p.Elements);

    /// <summary>Total parameter bytes over all element types.</summary>
    public long TotalParameterBytes => Parameters.Sum(p => p.Bytes);

    /// <summary>Summarises a loaded model. <paramref name="linearLayers"/> comes from layer analysis.</summary>
    public static ModelSummary Of(Model model, string path, IReadOnlyList<LinearLayerEntry>? linearLayers = null)
    {
        var g = model.Graph;
        var ops = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int nodes = 0;
        foreach (var n in g.AllNodes())
        {
            nodes++;
            string key = n.IsOnnxDomain ? n.OpType : $"{n.Domain}.{n.OpType}";
            ops[key] = ops.GetValueOrDefault(key) + 1;
        }
        int subgraphs = g.AllGraphs().Count() - 1;

        var perType = new SortedDictionary<string, (int Tensors, long Elements, long Bytes)>(StringComparer.Ordinal);
        var perFile = new SortedDictionary<string, (int Tensors, long Bytes)>(StringComparer.Ordinal);
        foreach (var sg in g.AllGraphs())
            foreach (var v in sg.Initializers)
            {
                var t = v.Initializer!;
                string dt = DataTypes.Name(t.DataType);
                var cur = perType.GetValueOrDefault(dt);
                perType[dt] = (cur.Tensors + 1, cur.Elements + t.ElementCount, cur.Bytes + t.ByteLength);
                if (t.SourceProto is { } sp && model.File?.ExternalDataOf(sp) is MappedTensorData m)
                {
                    string rel = System.IO.Path.GetRelativePath(model.File.Directory, m.File.Path);
                    var f = perFile.GetValueOrDefault(rel);
                    perFile[rel] = (f.Tensors + 1, f.Bytes + m.Length);
                }
            }
        var files = perFile.Select(kv => new ExternalFileEntry(kv.Key,
            new FileInfo(System.IO.Path.Combine(model.File!.Directory, kv.Key)).Length, kv.Value.Tensors, kv.Value.Bytes)).ToList();

        return new ModelSummary(
            path,
            File.Exists(path) ? new FileInfo(path).Length : 0,
            model.IrVersion,
            (model.ProducerName + " " + model.ProducerVersion).Trim(),
            model.Opsets,
            g.Inputs.Where(v => !v.IsInitializer).Select(Io).ToList(),
            g.Outputs.Select(Io).ToList(),
            nodes,
            subgraphs,
            ops.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList(),
            perType.Select(kv => new DtypeTotals(kv.Key, kv.Value.Tensors, kv.Value.Elements, kv.Value.Bytes)).ToList(),
            files,
            linearLayers ?? []) { QuantizedLayers = Inspection.QuantizedLayers.Find(model) };
    }

    private static IoEntry Io(Value v)
    {
        string type;
        IReadOnlyList<string>? shape = null;
        var tp = v.Type;
        if (tp?.TensorType is { } tt)
        {
            type = DataTypes.Name(tt.ElemType);
            if (tt.Shape is { } s)
                shape = s.Dim.Select(d => d.HasDimValue ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture)
                    : d.HasDimParam && d.DimParam.Length > 0 ? d.DimParam : "?").ToList();
        }
        else if (tp?.SequenceType is not null) type = "sequence";
        else if (tp?.MapType is not null) type = "map";
        else if (tp?.OptionalType is not null) type = "optional";
        else if (tp?.SparseTensorType is { } st) type = "sparse " + DataTypes.Name(st.ElemType);
        else type = "?";
        return new IoEntry(v.Name, type, shape);
    }

    /// <summary>Stable JSON (fixed key order, invariant formatting).</summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("path", Path);
            w.WriteNumber("file_bytes", FileBytes);
            w.WriteNumber("ir_version", IrVersion);
            w.WriteString("producer", Producer);
            w.WriteStartArray("opsets");
            foreach (var (d, ver) in Opsets)
            {
                w.WriteStartObject();
                w.WriteString("domain", d.Length == 0 ? "ai.onnx" : d);
                w.WriteNumber("version", ver);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            WriteIo(w, "inputs", Inputs);
            WriteIo(w, "outputs", Outputs);
            w.WriteNumber("nodes", NodeCount);
            w.WriteNumber("subgraphs", SubgraphCount);
            w.WriteStartObject("op_histogram");
            foreach (var kv in OpHistogram) w.WriteNumber(kv.Key, kv.Value);
            w.WriteEndObject();
            w.WriteStartObject("parameters");
            w.WriteNumber("total_elements", TotalParameters);
            w.WriteNumber("total_bytes", TotalParameterBytes);
            w.WriteStartArray("by_dtype");
            foreach (var p in Parameters)
            {
                w.WriteStartObject();
                w.WriteString("dtype", p.ElementType);
                w.WriteNumber("tensors", p.Tensors);
                w.WriteNumber("elements", p.Elements);
                w.WriteNumber("bytes", p.Bytes);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartArray("external_data");
            foreach (var f in ExternalData)
            {
                w.WriteStartObject();
                w.WriteString("location", f.Location);
                w.WriteNumber("file_bytes", f.FileBytes);
                w.WriteNumber("tensors", f.Tensors);
                w.WriteNumber("tensor_bytes", f.TensorBytes);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("linear_layers");
            foreach (var l in LinearLayers)
            {
                w.WriteStartObject();
                w.WriteString("name", l.Name);
                w.WriteString("op", l.Op);
                w.WriteNumber("in_features", l.InFeatures);
                w.WriteNumber("out_features", l.OutFeatures);
                w.WriteBoolean("bias", l.HasBias);
                if (l.FedBy is null) w.WriteNull("fed_by"); else w.WriteString("fed_by", l.FedBy);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (QuantizedLayers.Count > 0)
            {
                w.WriteStartArray("quantized_layers");
                foreach (var l in QuantizedLayers)
                {
                    w.WriteStartObject();
                    w.WriteString("name", l.Name);
                    w.WriteString("op", l.Op);
                    w.WriteString("weights", l.Weights);
                    w.WriteString("activations", l.Activations);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }

    private static void WriteIo(Utf8JsonWriter w, string key, IReadOnlyList<IoEntry> entries)
    {
        w.WriteStartArray(key);
        foreach (var e in entries)
        {
            w.WriteStartObject();
            w.WriteString("name", e.Name);
            w.WriteString("dtype", e.ElementType);
            if (e.Shape is null) w.WriteNull("shape");
            else
            {
                w.WriteStartArray("shape");
                foreach (var d in e.Shape)
                {
                    if (long.TryParse(d, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture,
                        out long n)) w.WriteNumberValue(n);
                    else w.WriteStringValue(d);
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
