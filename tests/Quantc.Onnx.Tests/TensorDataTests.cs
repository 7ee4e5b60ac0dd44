namespace Quantc.Onnx.Tests;

/// <summary>Copies of memory-mapped tensor slices (the writer's path for external data): in the kernel into files, plain reads and writes into other streams.</summary>
public sealed class TensorDataTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-tensordata");

    public void Dispose() => _dir.Delete(recursive: true);

    private string P(string name) => Path.Combine(_dir.FullName, name);

    [Theory]
    [InlineData(0L, 1)]
    [InlineData(4096L, 5_000_000)]   // more than one 4 MiB buffer
    [InlineData(12_345L, 777)]       // unaligned
    public void SlicesCopyExactlyIntoFilesAndStreams(long offset, int length)
    {
        var bytes = new byte[offset + length + 100];
        new Random(length).NextBytes(bytes);
        File.WriteAllBytes(P("src.bin"), bytes);
        using var mapped = new MappedFile(P("src.bin"));
        var slice = new MappedTensorData(mapped, offset, length);
        var want = bytes.AsSpan((int)offset, length).ToArray();

        // Into a file stream as the writer uses it: buffered bytes pending before, more writes after.
        using (var fs = new FileStream(P("dst.bin"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            fs.Write([1, 2, 3]);
            slice.CopyTo(fs);
            Assert.Equal(3 + length, fs.Position);
            fs.Write([4, 5]);
            slice.CopyTo(fs);
            fs.Flush(flushToDisk: true);
        }
        Assert.Equal([1, 2, 3, .. want, 4, 5, .. want], File.ReadAllBytes(P("dst.bin")));

        // Into a memory stream: plain reads.
        using var ms = new MemoryStream();
        ms.Write([9]);
        slice.CopyTo(ms);
        Assert.Equal([9, .. want], ms.ToArray());
        Assert.Equal(want, slice.Span.ToArray()); // the mapping agrees
    }

    [Fact]
    public void ASourceThatShrankIsAnError()
    {
        File.WriteAllBytes(P("s.bin"), new byte[8192]);
        using var mapped = new MappedFile(P("s.bin"));
        var slice = new MappedTensorData(mapped, 0, 8192);
        using (var f = new FileStream(P("s.bin"), FileMode.Open, FileAccess.Write)) f.SetLength(100); // truncated behind our back
        using var fs = new FileStream(P("d.bin"), FileMode.CreateNew, FileAccess.Write);
        Assert.Throws<EndOfStreamException>(() => slice.CopyTo(fs));
        using var ms = new MemoryStream();
        Assert.Throws<EndOfStreamException>(() => slice.CopyTo(ms));
    }
}
