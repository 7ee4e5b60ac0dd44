using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Quantc.Onnx;

namespace Quantc.Models;

/// <summary>Element types a safetensors file may hold that quantc reads.</summary>
public enum SafetensorsDType { F32, F16, BF16 }

/// <summary>One tensor of a safetensors file: where its bytes are, its type and shape.</summary>
public sealed record SafetensorsEntry(string Name, SafetensorsDType DType, long[] Shape, MappedFile File, long Offset, long Length)
{
    public long ElementCount => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>The raw bytes, memory-mapped (nothing is read until touched).</summary>
    public TensorData Data => new MappedTensorData(File, Offset, Length);
}

/// <summary>
/// Reads Hugging Face safetensors checkpoints: a single <c>.safetensors</c> file (an 8-byte
/// little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
/// then the raw bytes) or a sharded checkpoint through its <c>*.safetensors.index.json</c>
/// (<c>weight_map</c>: tensor name → shard file). Files are memory-mapped; tensors are read only
/// when touched. Every inconsistency is a <see cref="BadInputException"/> naming the file.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    private readonly List<MappedFile> _files = [];
    private readonly Dictionary<string, SafetensorsEntry> _entries = new(StringComparer.Ordinal);

    private SafetensorsCheckpoint(string path) => Path = path;

    /// <summary>The file or index the checkpoint was opened from.</summary>
    public string Path { get; }

    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Tensors => _entries;

    /// <summary>The header's __metadata__ entries of the (first) file.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; private set; } = new Dictionary<string, string>();

    /// <summary>Opens a .safetensors file, or an index .json of a sharded checkpoint.</summary>
    public static SafetensorsCheckpoint Open(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: checkpoint not found");
        var ck = new SafetensorsCheckpoint(path);
        try
        {
            if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) ck.OpenIndex(path);
            else ck.OpenFile(path, null);
            return ck;
        }
        catch
        {
            ck.Dispose();
            throw;
        }
    }

    private void OpenIndex(string indexPath)
    {
        Dictionary<string, string> map;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new BadInputException($"{indexPath}: not a safetensors index (no weight_map)");
            map = wm.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()
                ?? throw new BadInputException($"{indexPath}: weight_map entry '{p.Name}' is not a file name"), StringComparer.Ordinal);
        }
        catch (JsonException e) { throw new BadInputException($"{indexPath}: invalid JSON ({e.Message})", e); }
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        foreach (var shard in map.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
        {
            if (shard.Contains('/') || shard.Contains('\\') || shard is "." or "..")
                throw new BadInputException($"{indexPath}: shard '{shard}' must be a file next to the index");
            string p = System.IO.Path.Combine(dir, shard);
            if (!File.Exists(p)) throw new BadInputException($"{indexPath}: shard {shard} not found");
            var wanted = map.Where(kv => kv.Value == shard).Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
            OpenFile(p, wanted);
        }
        foreach (var name in map.Keys)
            if (!_entries.ContainsKey(name))
                throw new BadInputException($"{indexPath}: tensor '{name}' is listed in weight_map but not in shard {map[name]}");
    }

    private void OpenFile(string path, HashSet<string>? only)
    {
        var file = new MappedFile(path);
        _files.Add(file);
        long size = file.Length;
        if (size < 8) throw new BadInputException($"{path}: too short for a safetensors file");
        Span<byte> head = stackalloc byte[8];
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            fs.ReadExactly(head);
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (n == 0 || n > 100_000_000 || (long)n > size - 8)
                throw new BadInputException($"{path}: bad header length {n} (file is {size} bytes)");
            var json = new byte[n];
            fs.ReadExactly(json);
            ParseHeader(path, json, file, 8 + (long)n, size, only);
        }
    }

    private void ParseHeader(string path, byte[] json, MappedFile file, long dataStart, long fileSize, HashSet<string>? only)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new BadInputException($"{path}: header is not valid JSON ({e.Message})", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new BadInputException($"{path}: header is not a JSON object");
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    if (Metadata.Count == 0 && p.Value.ValueKind == JsonValueKind.Object)
                        Metadata = p.Value.EnumerateObject().ToDictionary(m => m.Name, m => m.Value.ToString(), StringComparer.Ordinal);
                    continue;
                }
                try
                {
                    var v = p.Value;
                    string dt = v.GetProperty("dtype").GetString() ?? "";
                    var dtype = dt switch
                    {
                        "F32" => SafetensorsDType.F32,
                        "F16" => SafetensorsDType.F16,
                        "BF16" => SafetensorsDType.BF16,
                        _ => throw new BadInputException($"{path}: tensor '{p.Name}' has dtype {dt}; quantc reads F32, F16 and BF16"),
                    };
                    var shape = v.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();
                    var offs = v.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
                    if (offs.Length != 2 || offs[0] < 0 || offs[1] < offs[0] || dataStart + offs[1] > fileSize)
                        throw new BadInputException($"{path}: tensor '{p.Name}' has data offsets [{string.Join(", ", offs)}] outside the " +
                            $"file (truncated?)");
                    if (shape.Any(d => d < 0)) throw new BadInputException($"{path}: tensor '{p.Name}' has a negative dimension");
                    long count = shape.Aggregate(1L, (a, d) => checked(a * d));
                    long bytes = count * (dtype == SafetensorsDType.F32 ? 4 : 2);
                    if (offs[1] - offs[0] != bytes)
                        throw new BadInputException($"{path}: tensor '{p.Name}' holds {offs[1] - offs[0]} bytes, " +
                            $"but {dt}[{string.Join(", ", shape)}] needs {bytes}");
                    ranges.Add((offs[0], offs[1], p.Name));
                    if (only is not null && !only.Contains(p.Name)) continue;
                    if (_entries.ContainsKey(p.Name))
                        throw new BadInputException($"{path}: tensor '{p.Name}' appears in more than one shard");
                    _entries[p.Name] = new SafetensorsEntry(p.Name, dtype, shape, file, dataStart + offs[0], bytes);
                }
                catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or OverflowException)
                {
                    throw new BadInputException($"{path}: tensor '{p.Name}' has a malformed header entry ({e.Message})", e);
                }
            }
            ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
            for (int i = 1; i < ranges.Count; i++)
                if (ranges[i].Begin < ranges[i - 1].End)
                    throw new BadInputException($"{path}: tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap");
        }
    }

    /// <summary>The entry <paramref name="name"/>; a clear error when the checkpoint lacks it.</summary>
    public SafetensorsEntry Get(string name) =>
        _entries.TryGetValue(name, out var e) ? e : throw new BadInputException($"{Path}: checkpoint has no tensor '{name}'");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}

/// <summary>Writes safetensors files (used by tests and tools; the format's canonical layout: sorted names, 8-byte aligned
/// header).</summary>
public static class SafetensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> (name, dtype, shape, raw little-endian bytes) to <paramref name="path"/>.</summary>
    public static void Write(string path, IEnumerable<(string Name, SafetensorsDType DType, long[] Shape, byte[] Bytes)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var sb = new StringBuilder("{");
        if (metadata is { Count: > 0 })
            sb.Append("\"__metadata__\":").Append(JsonSerializer.Serialize(metadata)).Append(',');
        long off = 0;
        foreach (var t in list)
        {
            sb.Append(JsonSerializer.Serialize(t.Name)).Append(":{\"dtype\":\"").Append(t.DType).Append("\",\"shape\":[")
              .Append(string.Join(",", t.Shape)).Append("],\"data_offsets\":[").Append(off).Append(',').Append(off
                  + t.Bytes.Length).Append("]},");
            off += t.Bytes.Length;
        }
        if (sb[^1] == ',') sb.Length--;
        sb.Append('}');
        while ((sb.Length + 8) % 8 != 0) sb.Append(' ');
        var header = Encoding.UTF8.GetBytes(sb.ToString());
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        fs.Write(len);
        fs.Write(header);
        foreach (var t in list) fs.Write(t.Bytes);
    }

    /// <summary>float32 values as bytes of <paramref name="dtype"/> (round to nearest even for fp16/bf16).</summary>
    public static byte[] Encode(ReadOnlySpan<float> values, SafetensorsDType dtype)
    {
        switch (dtype)
        {
            case SafetensorsDType.F32: return MemoryMarshal.AsBytes(values).ToArray();
            case SafetensorsDType.F16:
            {
                var h = new Half[values.Length];
                for (int i = 0; i < h.Length; i++) h[i] = (Half)values[i];
                return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
            }
            default:
            {
                var b = new ushort[values.Length];
                for (int i = 0; i < b.Length; i++)
                {
                    uint bits = BitConverter.SingleToUInt32Bits(values[i]);
                    b[i] = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                }
                return MemoryMarshal.AsBytes(b.AsSpan()).ToArray();
            }
        }
    }
}

/// <summary>
/// A checkpoint tensor as the graph wants it: float32, and for linear layers transposed from
/// PyTorch's [out, in] to [in, out]. Converted on demand, block by block, so a large tensor is
/// never copied whole.
/// </summary>
public sealed class ConvertedTensorData : TensorData
{
    private readonly SafetensorsEntry _src;
    private readonly bool _transpose;
    private readonly long _rows, _cols;   // output layout [rows, cols]

    public ConvertedTensorData(SafetensorsEntry src, bool transpose)
    {
        _src = src;
        _transpose = transpose;
        if (transpose)
        {
            if (src.Shape.Length != 2) throw new ArgumentException($"'{src.Name}': only 2-D tensors can be transposed");
            _rows = src.Shape[1];
            _cols = src.Shape[0];
        }
        else
        {
            _rows = 1;
            _cols = src.ElementCount;
        }
    }

    public override long Length => _rows * _cols * 4;

    private int SrcElem => _src.DType == SafetensorsDType.F32 ? 4 : 2;

    private float Decode(ReadOnlySpan<byte> s, int i) => _src.DType switch
    {
        SafetensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(s[(4 * i)..]),
        SafetensorsDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(s[(2 * i)..]),
        _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s[(2 * i)..]) << 16),
    };

    /// <summary>Output elements [first, first + dst.Length).</summary>
    private void Fill(long first, Span<float> dst)
    {
        var data = _src.Data;
        if (!_transpose)
        {
            const int block = 1 << 16;
            for (int k = 0; k < dst.Length; k += block)
            {
                int n = Math.Min(block, dst.Length - k);
                var s = data.Slice((first + k) * SrcElem, n * SrcElem);
                for (int i = 0; i < n; i++) dst[k + i] = Decode(s, i);
            }
            return;
        }
        // Output [rows=in, cols=out] from source [out, in]: out[r, c] = src[c, r]. Read source rows
        // (contiguous segments of the needed input range), scatter into the output block.
        long r0 = first / _cols, r1 = (first + dst.Length + _cols - 1) / _cols;
        int segment = (int)(r1 - r0);
        for (long c = 0; c < _cols; c++)
        {
            var s = data.Slice((c * _rows + r0) * SrcElem, segment * SrcElem);
            for (int j = 0; j < segment; j++)
            {
                long outIndex = (r0 + j) * _cols + c - first;
                if (outIndex >= 0 && outIndex < dst.Length) dst[(int)outIndex] = Decode(s, j);
            }
        }
    }

    public override ReadOnlySpan<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > Length) throw new ArgumentOutOfRangeException(nameof(offset));
        long first = offset / 4, last = (offset + length + 3) / 4;
        var floats = new float[last - first];
        Fill(first, floats);
        return MemoryMarshal.AsBytes(floats.AsSpan()).Slice((int)(offset - first * 4), length);
    }

    public override void CopyTo(Stream destination)
    {
        long total = _rows * _cols;
        // Whole output rows per block, about 4 M elements.
        long rowsPerBlock = Math.Max(1, (4L << 20) / Math.Max(1, _cols));
        var buf = new float[Math.Min(total, rowsPerBlock * _cols)];
        for (long start = 0; start < total; start += buf.Length)
        {
            int n = (int)Math.Min(buf.Length, total - start);
            Fill(start, buf.AsSpan(0, n));
            destination.Write(MemoryMarshal.AsBytes(buf.AsSpan(0, n)));
        }
    }
}
