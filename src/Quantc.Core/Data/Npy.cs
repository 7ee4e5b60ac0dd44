using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Quantc.Onnx;

namespace Quantc.Core.Data;

/// <summary>One array read from a .npy file: its data (float[], long[], int[], Half[], bool[], byte[], sbyte[], short[], double[]) and
/// shape.</summary>
public sealed record NpyArray(Array Data, long[] Shape)
{
    /// <summary>Element count.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>Reads NumPy .npy and .npz files (little-endian, C order; the formats numpy.save / numpy.savez write).</summary>
public static partial class Npy
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads a .npy file.</summary>
    public static NpyArray Read(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: file not found");
        using var fs = File.OpenRead(path);
        return Read(fs, path);
    }

    /// <summary>Reads every array of a .npz archive, by name (without the .npy suffix), in archive order.</summary>
    public static List<(string Name, NpyArray Array)> ReadArchive(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: file not found");
        try
        {
            using var zip = ZipFile.OpenRead(path);
            var list = new List<(string, NpyArray)>();
            foreach (var e in zip.Entries)
            {
                if (!e.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                using var s = e.Open();
                using var ms = new MemoryStream();
                s.CopyTo(ms);
                ms.Position = 0;
                list.Add((e.FullName[..^4], Read(ms, $"{path}:{e.FullName}")));
            }
            if (list.Count == 0) throw new BadInputException($"{path}: no arrays in the archive");
            return list;
        }
        catch (InvalidDataException e)
        {
            throw new BadInputException($"{path}: not a valid .npz archive ({e.Message})", e);
        }
    }

    /// <summary>Reads one .npy from a stream.</summary>
    public static NpyArray Read(Stream s, string what)
    {
        var head = new byte[10];
        if (s.ReadAtLeast(head, 10, throwOnEndOfStream: false) < 10 || !head.AsSpan(0, 6).SequenceEqual(Magic))
            throw new BadInputException($"{what}: not a .npy file");
        int major = head[6];
        int headerLen;
        if (major == 1) headerLen = head[8] | (head[9] << 8);
        else if (major is 2 or 3)
        {
            var more = new byte[2];
            if (s.ReadAtLeast(more, 2, false) < 2) throw new BadInputException($"{what}: truncated .npy header");
            headerLen = head[8] | (head[9] << 8) | (more[0] << 16) | (more[1] << 24);
        }
        else throw new BadInputException($"{what}: unsupported .npy version {major}");
        if (headerLen is < 0 or > 1 << 20) throw new BadInputException($"{what}: bad .npy header length");
        var hb = new byte[headerLen];
        if (s.ReadAtLeast(hb, headerLen, false) < headerLen) throw new BadInputException($"{what}: truncated .npy header");
        string header = Encoding.Latin1.GetString(hb);
        var descr = DescrRegex().Match(header);
        var order = OrderRegex().Match(header);
        var shapeM = ShapeRegex().Match(header);
        if (!descr.Success || !shapeM.Success) throw new BadInputException($"{what}: cannot parse the .npy header");
        if (order.Success && order.Groups[1].Value == "True")
            throw new BadInputException($"{what}: Fortran-order arrays are not supported; save with C order");
        var dims = shapeM.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var shape = new long[dims.Length];
        for (int i = 0; i < dims.Length; i++)
            if (!long.TryParse(dims[i].TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out shape[i]))
                throw new BadInputException($"{what}: the .npy shape ({shapeM.Groups[1].Value}) is not a list of non-negative integers");
        string d = descr.Groups[1].Value;
        if (d.Length > 0 && d[0] == '>') throw new BadInputException($"{what}: big-endian arrays are not supported");
        string kind = d.TrimStart('<', '|', '=');
        long itemSize = kind switch { "f8" or "i8" => 8, "f4" or "i4" => 4, "f2" or "i2" => 2, "i1" or "u1" or "b1" => 1, _ => 0 };
        // The size the header claims is checked against what the file holds before anything is allocated.
        long count = 1;
        foreach (long n in shape)
            if (n != 0 && count > Array.MaxLength / n) { count = -1; break; }
            else count *= n;
        if (count < 0 || (itemSize > 0 && s.CanSeek && count * itemSize > s.Length - s.Position))
            throw new BadInputException($"{what}: the .npy shape ({shapeM.Groups[1].Value}) needs more data than the file holds");
        Array data = kind switch
        {
            "f4" => new float[count],
            "f8" => new double[count],
            "f2" => new Half[count],
            "i8" => new long[count],
            "i4" => new int[count],
            "i2" => new short[count],
            "i1" => new sbyte[count],
            "u1" => new byte[count],
            "b1" => new bool[count],
            _ => throw new BadInputException($"{what}: unsupported dtype '{d}'"),
        };
        var bytes = data switch
        {
            float[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            double[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            Half[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            long[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            int[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            short[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            sbyte[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            byte[] a => a.AsSpan(),
            bool[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            _ => throw new InvalidOperationException(),
        };
        if (s.ReadAtLeast(bytes, bytes.Length, false) < bytes.Length)
            throw new BadInputException($"{what}: truncated .npy data ({count} elements expected)");
        return new NpyArray(data, shape);
    }

    /// <summary>Writes a float32 or int64 .npy (used by tests and tools).</summary>
    public static void Write(string path, Array data, long[] shape)
    {
        string descr = data switch { float[] => "<f4", long[] => "<i8", int[] => "<i4", _ =>
            throw new ArgumentException("float[], long[] or int[] only") };
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': " +
            $"({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        int total = 10 + dict.Length + 1;
        int pad = (64 - total % 64) % 64;
        string header = dict + new string(' ', pad) + "\n";
        using var fs = File.Create(path);
        fs.Write(Magic);
        fs.Write([1, 0, (byte)(header.Length & 0xFF), (byte)(header.Length >> 8)]);
        fs.Write(Encoding.Latin1.GetBytes(header));
        fs.Write(data switch
        {
            float[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            long[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            int[] a => MemoryMarshal.AsBytes(a.AsSpan()),
            _ => throw new InvalidOperationException(),
        });
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrRegex();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex OrderRegex();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapeRegex();
}
