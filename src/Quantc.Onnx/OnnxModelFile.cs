using System.Globalization;
using Google.Protobuf;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx;

/// <summary>Options for reading a model.</summary>
public sealed record OnnxReadOptions
{
    /// <summary>Deepest nesting of protobuf messages accepted (subgraphs inside subgraphs...).</summary>
    public int RecursionLimit { get; init; } = 100;

    /// <summary>Verify the SHA-1 "checksum" key of external data when present (reads the whole file).</summary>
    public bool VerifyChecksums { get; init; }
}

/// <summary>
/// A model read from disk: its protobuf, and its external data resolved and memory-mapped
/// (lazily). Every tensor is checked on load: external references must stay inside the
/// model's folder and inside their file, and raw data must have the size the shape implies.
/// Dispose to release the mappings.
/// </summary>
public sealed class OnnxModelFile : IDisposable
{
    private readonly Dictionary<TensorProto, TensorData> _external = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, MappedFile> _files = new(StringComparer.Ordinal);

    private OnnxModelFile(string path, ModelProto proto)
    {
        Path = System.IO.Path.GetFullPath(path);
        Directory = System.IO.Path.GetDirectoryName(Path)!;
        Proto = proto;
    }

    /// <summary>Full path of the model file.</summary>
    public string Path { get; }

    /// <summary>The folder external data is resolved against.</summary>
    public string Directory { get; }

    /// <summary>The model's protobuf as read (external tensors still point at their files).</summary>
    public ModelProto Proto { get; }

    /// <summary>External data files this model references (resolved paths).</summary>
    public IReadOnlyCollection<MappedFile> ExternalFiles => _files.Values;

    /// <summary>Takes every page read through this model's external data maps out of resident memory (<see cref="MappedFile.DropPages"/>).
    /// </summary>
    public void DropMappedPages()
    {
        foreach (var f in _files.Values) f.DropPages();
    }

    /// <summary>The mapped bytes of an external tensor of this model, or null when the tensor is not external.</summary>
    public TensorData? ExternalDataOf(TensorProto tensor) => _external.GetValueOrDefault(tensor);

    /// <summary>Reads and validates a model. Bad input raises <see cref="BadInputException"/> with a one-line reason.</summary>
    public static OnnxModelFile Load(string path, OnnxReadOptions? options = null)
    {
        options ??= new OnnxReadOptions();
        if (string.IsNullOrEmpty(path)) throw new BadInputException("no model path given");
        if (System.IO.Directory.Exists(path))
        {
            string inside = System.IO.Path.Combine(path, "model.onnx");  // a GenAI folder's model
            throw new BadInputException($"{path}: is a folder, not an ONNX model file" +
                (File.Exists(inside) ? $" (its model is {inside})" : ""));
        }
        if (!File.Exists(path)) throw new BadInputException($"{path}: file not found");

        ModelProto proto;
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            if (fs.Length == 0) throw new BadInputException($"{path}: empty file, not an ONNX model");
            if (fs.Length > int.MaxValue)
                throw new BadInputException($"{path}: {fs.Length} bytes; a protobuf file cannot exceed 2 GiB (large weights must be " +
                    $"external data)");
            var input = CodedInputStream.CreateWithLimits(fs, (int)fs.Length, options.RecursionLimit);
            proto = new ModelProto();
            proto.MergeFrom(input);
            if (!input.IsAtEnd) throw new BadInputException($"{path}: trailing bytes after the model");
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new BadInputException($"{path}: not a valid ONNX model (corrupt or truncated protobuf: {FirstLine(e.Message)})", e);
        }
        catch (IOException e)
        {
            throw new BadInputException($"{path}: cannot read: {FirstLine(e.Message)}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new BadInputException($"{path}: permission denied", e);
        }

        if (!proto.HasIrVersion || proto.IrVersion <= 0)
            throw new BadInputException($"{path}: not an ONNX model (no ir_version)");
        if (proto.Graph is null)
            throw new BadInputException($"{path}: not an ONNX model (no graph)");

        var model = new OnnxModelFile(path, proto);
        try
        {
            model.ValidateTensors(options);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>Wraps a protobuf built in memory (no external data).</summary>
    public static OnnxModelFile FromProto(ModelProto proto, string directory)
    {
        var m = new OnnxModelFile(System.IO.Path.Combine(directory, "model.onnx"), proto);
        m.ValidateTensors(new OnnxReadOptions());
        return m;
    }

    private void ValidateTensors(OnnxReadOptions options)
    {
        foreach (var (tensor, where) in ModelWalker.Tensors(Proto))
            ValidateTensor(tensor, where, options);
    }

    private void ValidateTensor(TensorProto t, string where, OnnxReadOptions options)
    {
        string name = t.HasName && t.Name.Length > 0 ? $"tensor '{t.Name}'" : "unnamed tensor";
        string what = $"{name} ({where})";
        try { ValidateTensorShaped(t, what, options); }
        catch (OverflowException)
        {
            // Found by fuzzing (fuzz/regressions/model): dimensions whose product, or its size in bytes, passes 2^63.
            throw new BadInputException($"{what}: shape [{string.Join(",", t.Dims)}] has more elements than can be addressed");
        }
    }

    private void ValidateTensorShaped(TensorProto t, string what, OnnxReadOptions options)
    {
        long count = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0) throw new BadInputException($"{what}: negative dimension {d}");
            count = checked(count * d);
        }

        bool isString = t.DataType == (int)TensorProto.Types.DataType.String;
        int bits = DataTypes.BitsOf(t.DataType);
        if (!isString && bits == 0)
            throw new BadInputException($"{what}: unknown data type {t.DataType}");

        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            if (isString) throw new BadInputException($"{what}: string tensors cannot be stored as external data");
            long expected = DataTypes.ByteSize(t.DataType, count);
            _external[t] = ResolveExternal(t, what, expected, options);
            return;
        }

        if (t.HasRawData)
        {
            if (isString) throw new BadInputException($"{what}: string tensors cannot use raw_data");
            long expected = DataTypes.ByteSize(t.DataType, count);
            if (t.RawData.Length != expected)
                throw new BadInputException($"{what}: raw_data has {t.RawData.Length} bytes but shape [{string.Join(",", t.Dims)}] " +
                    $"of {DataTypes.Name(t.DataType)} needs {expected}");
            return;
        }

        long have = TypedFieldCount(t, out long perElementUnits);
        // An all-empty typed tensor with nonzero element count is allowed by ONNX only when count == 0.
        if (have != checked(count * perElementUnits) && !(have == 0 && count == 0))
        {
            // Sub-byte types are packed two (or four) to an int32 (strings have no bit width: found by fuzzing).
            if (bits is > 0 and < 8)
            {
                long packed = DataTypes.ByteSize(t.DataType, count);
                if (have == packed) return;
            }
            throw new BadInputException($"{what}: holds {have} values but shape [{string.Join(",", t.Dims)}] " +
                $"needs {count * perElementUnits}");
        }
    }

    private static long TypedFieldCount(TensorProto t, out long unitsPerElement)
    {
        unitsPerElement = 1;
        switch ((TensorProto.Types.DataType)t.DataType)
        {
            case TensorProto.Types.DataType.Float: return t.FloatData.Count;
            case TensorProto.Types.DataType.Complex64: unitsPerElement = 2; return t.FloatData.Count;
            case TensorProto.Types.DataType.Double: return t.DoubleData.Count;
            case TensorProto.Types.DataType.Complex128: unitsPerElement = 2; return t.DoubleData.Count;
            case TensorProto.Types.DataType.Int64: return t.Int64Data.Count;
            case TensorProto.Types.DataType.Uint32:
            case TensorProto.Types.DataType.Uint64: return t.Uint64Data.Count;
            case TensorProto.Types.DataType.String: return t.StringData.Count;
            default: return t.Int32Data.Count;
        }
    }

    private TensorData ResolveExternal(TensorProto t, string what, long expected, OnnxReadOptions options)
    {
        string? location = null, checksum = null;
        long offset = 0;
        long? length = null;
        foreach (var kv in t.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset": offset = ParseNonNegative(kv.Value, "offset", what); break;
                case "length": length = ParseNonNegative(kv.Value, "length", what); break;
                case "checksum": checksum = kv.Value; break;
                default: break; // unknown keys are allowed by the spec and kept on round trip
            }
        }
        if (string.IsNullOrEmpty(location))
            throw new BadInputException($"{what}: external data without a location");
        string file = ResolveLocation(location, what);

        if (!_files.TryGetValue(file, out var mapped))
        {
            mapped = new MappedFile(file);
            _files[file] = mapped;
        }
        if (offset > mapped.Length)
            throw new BadInputException($"{what}: external data offset {offset} is beyond the end of '{location}' ({mapped.Length} bytes)");
        long len = length ?? (mapped.Length - offset);
        if (offset + len > mapped.Length)
            throw new BadInputException($"{what}: external data [{offset}, {offset + len}) runs past the end of '{location}' " +
                $"({mapped.Length} bytes)");
        if (len != expected)
            throw new BadInputException($"{what}: external data length {len} but shape [{string.Join(",", t.Dims)}] " +
                $"of {DataTypes.Name(t.DataType)} needs {expected}");
        if (checksum is not null && options.VerifyChecksums)
            VerifyChecksum(file, checksum, what);
        return new MappedTensorData(mapped, offset, len);
    }

    private string ResolveLocation(string location, string what)
    {
        if (location.Contains('\0')) throw new BadInputException($"{what}: external data location contains a NUL character");
        if (System.IO.Path.IsPathRooted(location) || location.StartsWith('/') || location.StartsWith('\\') ||
            (location.Length >= 2 && location[1] == ':'))
            throw new BadInputException($"{what}: external data location '{location}' is absolute; it must be relative to the model's " +
                $"folder");
        var segments = location.Split('/', '\\');
        if (segments.Any(s => s == ".."))
            throw new BadInputException($"{what}: external data location '{location}' contains '..'; it must stay inside the model's " +
                $"folder");
        string joined = System.IO.Path.GetFullPath(System.IO.Path.Combine(Directory, location));
        if (System.IO.Directory.Exists(joined))
            throw new BadInputException($"{what}: external data location '{location}' is a folder, not a file");
        if (!File.Exists(joined))
            throw new BadInputException($"{what}: external data file '{location}' not found next to the model");
        string? real = RealPath.Resolve(joined);
        string? realDir = RealPath.Resolve(Directory);
        if (real is null || realDir is null)
            throw new BadInputException($"{what}: external data file '{location}' cannot be resolved");
        string prefix = realDir.EndsWith(System.IO.Path.DirectorySeparatorChar) ? realDir : realDir + System.IO.Path.DirectorySeparatorChar;
        if (!real.StartsWith(prefix, StringComparison.Ordinal))
            throw new BadInputException($"{what}: external data file '{location}' resolves (through a symlink) to '{real}', outside the " +
                $"model's folder");
        return real;
    }

    private static void VerifyChecksum(string file, string checksum, string what)
    {
        using var fs = File.OpenRead(file);
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA1.HashData(fs));
        if (!string.Equals(hash, checksum, StringComparison.OrdinalIgnoreCase))
            throw new BadInputException($"{what}: external data file checksum {hash} does not match the model's {checksum}");
    }

    private static long ParseNonNegative(string s, string key, string what)
    {
        if (!long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long v))
            throw new BadInputException($"{what}: external data {key} '{s}' is not a non-negative integer");
        return v;
    }

    private static string FirstLine(string s)
    {
        int i = s.IndexOf('\n');
        return (i < 0 ? s : s[..i]).Trim();
    }

    public void Dispose()
    {
        foreach (var f in _files.Values) f.Dispose();
        _files.Clear();
    }
}
