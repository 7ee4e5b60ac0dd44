using Google.Protobuf;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx;

/// <summary>How a model is written.</summary>
public sealed record OnnxWriteOptions
{
    /// <summary>Tensors with at least this many bytes go to the external data file. long.MaxValue keeps all inline unless the proto would
    /// pass 2 GB.</summary>
    public long ExternalDataThreshold { get; init; } = 1L << 20;

    /// <summary>Name of the external data file, next to the model. Default: the model's file name + ".data".</summary>
    public string? ExternalDataFileName { get; init; }

    /// <summary>Offset alignment of each tensor in the external data file (so it can be mapped directly).</summary>
    public int Alignment { get; init; } = 4096;

    /// <summary>The largest protobuf we write; above it, the largest tensors move to external data. Protobuf's hard limit is 2
    /// GiB.</summary>
    public long MaxProtoBytes { get; init; } = int.MaxValue - (64L << 20);
}

/// <summary>
/// Writes a model atomically and deterministically: everything goes to temporary files in the
/// destination folder, which are renamed into place only when complete; the same proto
/// writes the same bytes. Tensor payloads are streamed, so memory stays flat for models of
/// any size.
/// </summary>
public static class OnnxModelWriter
{
    /// <summary>What a save wrote.</summary>
    public sealed record Result(string ModelPath, string? ExternalDataPath, int ExternalTensors, long ExternalBytes);

    /// <summary>
    /// Saves <paramref name="model"/> to <paramref name="path"/>. The proto is not modified.
    /// <paramref name="externalData"/> supplies the bytes of tensors whose data_location is EXTERNAL
    /// (for a model read from disk: <see cref="OnnxModelFile.ExternalDataOf"/>).
    /// </summary>
    public static Result Save(ModelProto model, string path, Func<TensorProto, TensorData?>? externalData = null,
        OnnxWriteOptions? options = null)
    {
        options ??= new OnnxWriteOptions();
        externalData ??= _ => null;
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string dataName = options.ExternalDataFileName ?? Path.GetFileName(full) + ".data";
        if (dataName.Contains('/') || dataName.Contains('\\') || dataName == ".." || dataName == ".")
            throw new ArgumentException($"external data file name '{dataName}' must be a plain file name");
        string dataPath = Path.Combine(dir, dataName);

        // Work on a copy: ByteStrings are shared, not copied, so this is cheap for raw tensors.
        var copy = model.Clone();
        var originals = ModelWalker.Tensors(model).Select(x => x.Tensor).ToList();
        var copies = ModelWalker.Tensors(copy).Select(x => x.Tensor).ToList();

        // Decide which tensors go external.
        var sizes = new long[originals.Count];
        var external = new bool[originals.Count];
        long inlineTotal = 0;
        for (int i = 0; i < originals.Count; i++)
        {
            var t = originals[i];
            TensorData? ext = t.DataLocation == TensorProto.Types.DataLocation.External ? externalData(t) : null;
            if (t.DataLocation == TensorProto.Types.DataLocation.External && ext is null)
                throw new InvalidOperationException($"tensor '{t.Name}' is external but its data was not supplied");
            sizes[i] = TensorBytes.PayloadBytes(t, ext);
            bool canExternal = t.DataType != (int)TensorProto.Types.DataType.String;
            external[i] = canExternal && sizes[i] >= options.ExternalDataThreshold && sizes[i] > 0;
            if (!external[i]) inlineTotal += sizes[i];
        }
        if (inlineTotal > options.MaxProtoBytes)
        {
            foreach (int i in Enumerable.Range(0, originals.Count).Where(i => !external[i] &&
                originals[i].DataType != (int)TensorProto.Types.DataType.String)
                         .OrderByDescending(i => sizes[i]).ThenBy(i => i))
            {
                if (inlineTotal <= options.MaxProtoBytes) break;
                external[i] = true;
                inlineTotal -= sizes[i];
            }
        }

        string tmpModel = TempPath(dir);
        string? tmpData = null;
        int extCount = 0;
        long extBytes = 0;
        try
        {
            if (external.Any(e => e))
            {
                tmpData = TempPath(dir);
                using var ds = new FileStream(tmpData, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
                for (int i = 0; i < originals.Count; i++)
                {
                    var src = originals[i];
                    var dst = copies[i];
                    if (!external[i])
                    {
                        if (src.DataLocation == TensorProto.Types.DataLocation.External)
                            TensorBytes.SetRaw(dst, externalData(src)!.Span); // small external tensor comes back inline
                        continue;
                    }
                    long pad = (options.Alignment - ds.Position % options.Alignment) % options.Alignment;
                    if (pad > 0) ds.Write(new byte[pad]);
                    long offset = ds.Position;
                    if (src.DataLocation == TensorProto.Types.DataLocation.External) externalData(src)!.CopyTo(ds);
                    else ds.Write(TensorBytes.InlineBytes(src).Span);
                    long length = ds.Position - offset;
                    // overlaps the disk writes with the copy; the fsync below then has little left
                    if (length >= 1 << 20) KernelCopy.StartWriteBack(ds, offset, length);
                    TensorBytes.ClearData(dst);
                    dst.DataLocation = TensorProto.Types.DataLocation.External;
                    dst.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                    dst.ExternalData.Add(new StringStringEntryProto { Key = "offset",
                        Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    dst.ExternalData.Add(new StringStringEntryProto { Key = "length",
                        Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    extCount++;
                    extBytes += length;
                }
                ds.Flush(flushToDisk: true);
            }
            else
            {
                for (int i = 0; i < originals.Count; i++)
                    if (originals[i].DataLocation == TensorProto.Types.DataLocation.External)
                        TensorBytes.SetRaw(copies[i], externalData(originals[i])!.Span);
            }

            using (var ms = new FileStream(tmpModel, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var cos = new CodedOutputStream(ms, leaveOpen: true);
                copy.WriteTo(cos);
                cos.Flush();
                ms.Flush(flushToDisk: true);
            }

            // Two files cannot be replaced in one atomic step. If an older model at the destination
            // uses the data file we are about to replace, remove that model first: a crash between
            // the two renames then leaves no model rather than a model that reads the wrong bytes.
            if (tmpData is not null && File.Exists(dataPath) && File.Exists(full)) File.Delete(full);
            if (tmpData is not null) File.Move(tmpData, dataPath, overwrite: true);
            tmpData = null;
            File.Move(tmpModel, full, overwrite: true);
            return new Result(full, extCount > 0 ? dataPath : null, extCount, extBytes);
        }
        finally
        {
            TryDelete(tmpModel);
            if (tmpData is not null) TryDelete(tmpData);
        }
    }

    /// <summary>A short unique temporary file name in <paramref name="dir"/> (short, so that any file name that fits fits its temporary
    /// too).</summary>
    public static string TempPath(string dir) => Path.Combine(dir, $".qc-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..12]}.tmp");

    private static void TryDelete(string p)
    {
        try { if (File.Exists(p)) File.Delete(p); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
