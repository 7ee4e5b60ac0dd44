using Quantc.Onnx;

namespace Quantc.Onnx.Tests;

/// <summary>The spill file (bytes out of resident memory, read back with pread) and dropping the pages of a mapped file.</summary>
public sealed class SpillFileTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-spillfile");

    public void Dispose() => _dir.Delete(recursive: true);

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void ReadsBackSlicesAndCopiesWhatWasWritten()
    {
        using var spill = new SpillFile(_dir.FullName);
        Assert.Empty(_dir.GetFiles());                       // unlinked as soon as it is open
        var a = Bytes(3 << 20, 1);
        var b = Bytes(1000, 2);
        var da = spill.Write(a);
        var db = spill.Write(b);
        Assert.Equal(a.Length + b.Length, spill.Length);
        Assert.Equal(a, da.Span.ToArray());
        Assert.Equal(b, db.Span.ToArray());
        Assert.Equal(a.AsSpan(12345, 777).ToArray(), da.Slice(12345, 777).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => db.Slice(900, 101).ToArray());

        var path = Path.Combine(_dir.FullName, "copy.bin");
        using (var fs = new FileStream(path, FileMode.Create))
        {
            fs.Write([7, 7, 7]);                              // the copy lands after what the stream already holds
            da.CopyTo(fs);
            db.CopyTo(fs);
        }
        Assert.Equal(new byte[] { 7, 7, 7 }.Concat(a).Concat(b).ToArray(), File.ReadAllBytes(path));
        using var ms = new MemoryStream();
        db.CopyTo(ms);
        Assert.Equal(b, ms.ToArray());
    }

    [Fact]
    public void DisposedSpillFileRefusesWrites()
    {
        var spill = new SpillFile(_dir.FullName);
        spill.Dispose();
        Assert.Throws<ObjectDisposedException>(() => spill.Write([1, 2, 3]));
    }

    [Fact]
    public void ReservedRegionsAreRewrittenInPlaceAndReadZerosWhereNeverWritten()
    {
        using var spill = new SpillFile(_dir.FullName);
        var before = spill.Write(Bytes(100, 4));
        var region = spill.Reserve(1 << 20);
        var after = spill.Write(Bytes(50, 5));
        Assert.Equal(100 + (1 << 20) + 50, spill.Length);
        var tail = new byte[16];
        region.Read((1 << 20) - 16, tail);                   // the last region of the file, never written: zeros
        Assert.All(tail, b => Assert.Equal(0, b));
        var a = Bytes(4096, 6);
        region.Write(8192, a);
        region.Write(8192 + 10, [1, 2, 3]);                  // rewritten in place
        a[10] = 1; a[11] = 2; a[12] = 3;
        var back = new byte[4096];
        region.Read(8192, back);
        Assert.Equal(a, back);
        Assert.Equal(Bytes(100, 4), before.Span.ToArray());  // the neighbours are untouched
        Assert.Equal(Bytes(50, 5), after.Span.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => region.Write((1 << 20) - 2, [1, 2, 3]));
        Assert.Throws<ArgumentOutOfRangeException>(() => region.Read(-1, new byte[1]));
    }

    [Fact]
    public void DroppedPagesOfAMapReadTheSameBytesAgain()
    {
        var path = Path.Combine(_dir.FullName, "mapped.bin");
        var bytes = Bytes(5 << 20, 3);
        File.WriteAllBytes(path, bytes);
        using var file = new MappedFile(path);
        file.DropPages();                                     // not mapped yet: nothing to do
        var slice = new MappedTensorData(file, 4097, bytes.Length - 5000);
        Assert.Equal(bytes.AsSpan(4097, 100).ToArray(), slice.Slice(0, 100).ToArray());
        slice.DropPages();
        Assert.Equal(bytes.AsSpan(4097, bytes.Length - 5000).ToArray(), slice.Span.ToArray());
        file.DropPages(10, 1);
        file.DropPages();
        Assert.Equal(bytes, new MappedTensorData(file, 0, bytes.Length).Span.ToArray());
    }
}
