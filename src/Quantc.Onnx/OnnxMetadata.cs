using Google.Protobuf;
using Quantc.Onnx.Proto;

namespace Quantc.Onnx;

/// <summary>
/// A model file's metadata_props (ModelProto field 14) read without parsing the rest: the top-level fields are walked and every
/// other one skipped by its length, so a model of any size costs a few reads (the graph and its weights are never loaded).
/// </summary>
public static class OnnxMetadata
{
    private const int MetadataField = 14;

    /// <summary>The key/value pairs of <paramref name="path"/>'s metadata_props, in file order.</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> Read(string path)
    {
        var result = new List<KeyValuePair<string, string>>();
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
        while (f.Position < f.Length)
        {
            ulong tag = Varint(f, path);
            int field = (int)(tag >> 3), wire = (int)(tag & 7);
            switch (wire)
            {
                case 0: Varint(f, path); break;
                case 1: Skip(f, 8, path); break;
                case 5: Skip(f, 4, path); break;
                case 2:
                {
                    ulong length = Varint(f, path);
                    if (length > (ulong)(f.Length - f.Position)) throw Bad(path);
                    if (field != MetadataField) { f.Seek((long)length, SeekOrigin.Current); break; }
                    var bytes = new byte[length];
                    f.ReadExactly(bytes);
                    try
                    {
                        var entry = StringStringEntryProto.Parser.ParseFrom(bytes);
                        result.Add(KeyValuePair.Create(entry.Key, entry.Value));
                    }
                    catch (InvalidProtocolBufferException) { throw Bad(path); }
                    break;
                }
                default: throw Bad(path);
            }
        }
        return result;
    }

    private static ulong Varint(FileStream f, string path)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            int b = f.ReadByte();
            if (b < 0) throw Bad(path);
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return value;
        }
        throw Bad(path);
    }

    private static void Skip(FileStream f, long count, string path)
    {
        if (f.Length - f.Position < count) throw Bad(path);
        f.Seek(count, SeekOrigin.Current);
    }

    private static BadInputException Bad(string path) => new($"{path}: not a valid ONNX model (truncated or corrupt protobuf)");
}
