using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Quantc.Onnx;

/// <summary>
/// The bytes of a tensor, wherever they live: in memory (inline raw_data, or a new tensor a
/// pass made) or in a slice of a memory-mapped external data file. Reading a mapped slice
/// touches only the pages it reads, so opening a large model costs no memory.
/// </summary>
public abstract class TensorData
{
    /// <summary>Length in bytes.</summary>
    public abstract long Length { get; }

    /// <summary>The bytes as one span. Throws for data over 2 GiB; use <see cref="Slice"/> or <see cref="CopyTo"/>.</summary>
    public ReadOnlySpan<byte> Span => Slice(0, checked((int)Length));

    /// <summary>A window of the bytes.</summary>
    public abstract ReadOnlySpan<byte> Slice(long offset, int length);

    /// <summary>Streams the bytes to <paramref name="destination"/> in chunks (never loads them whole).</summary>
    public virtual void CopyTo(Stream destination)
    {
        const int chunk = 4 << 20;
        for (long off = 0; off < Length; off += chunk)
            destination.Write(Slice(off, (int)Math.Min(chunk, Length - off)));
    }

    /// <summary>Wraps bytes already in memory (not copied).</summary>
    public static TensorData FromMemory(ReadOnlyMemory<byte> bytes) => new MemoryTensorData(bytes);
}

/// <summary>Tensor bytes held in managed memory.</summary>
public sealed class MemoryTensorData(ReadOnlyMemory<byte> bytes) : TensorData
{
    public ReadOnlyMemory<byte> Memory { get; } = bytes;
    public override long Length => Memory.Length;
    public override ReadOnlySpan<byte> Slice(long offset, int length) => Memory.Span.Slice(checked((int)offset), length);
    public override void CopyTo(Stream destination) => destination.Write(Memory.Span);
}

/// <summary>A slice of a memory-mapped external data file.</summary>
public sealed class MappedTensorData : TensorData
{
    public MappedTensorData(MappedFile file, long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > file.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), "slice outside the mapped file");
        File = file;
        Offset = offset;
        _length = length;
    }

    private readonly long _length;
    public MappedFile File { get; }
    public long Offset { get; }
    public override long Length => _length;

    public override unsafe ReadOnlySpan<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > _length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (length == 0) return ReadOnlySpan<byte>.Empty;
        return new ReadOnlySpan<byte>(File.Pointer + Offset + offset, length);
    }

    /// <summary>
    /// Streams the slice with plain reads rather than through the mapping: pages read through a map
    /// count in the process's resident memory, reads go through the page cache only, so copying a
    /// model of any size keeps memory flat.
    /// </summary>
    public override void CopyTo(Stream destination)
    {
        using var fs = new FileStream(File.Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.SequentialScan);
        fs.Position = Offset;
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(4 << 20);
        try
        {
            long left = _length;
            while (left > 0)
            {
                int n = fs.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n <= 0) throw new EndOfStreamException($"{File.Path} ended while copying tensor data");
                destination.Write(buffer, 0, n);
                left -= n;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

/// <summary>
/// A read-only memory map of one file. The map is created on first access; the virtual
/// mapping costs no physical memory until pages are touched.
/// </summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly object _gate = new();
    private MemoryMappedFile? _map;
    private MemoryMappedViewAccessor? _view;
    private byte* _pointer;

    public MappedFile(string path)
    {
        Path = path;
        Length = new FileInfo(path).Length;
    }

    public string Path { get; }
    public long Length { get; }

    /// <summary>Base address of the mapping (maps the file on first use).</summary>
    public byte* Pointer
    {
        get
        {
            if (_pointer != null) return _pointer;
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_pointer == null)
                {
                    if (Length == 0) throw new InvalidOperationException($"{Path} is empty");
                    using var fs = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
                    _map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
                    _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                    byte* p = null;
                    _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                    _pointer = p + _view.PointerOffset;
                }
                return _pointer;
            }
        }
    }

    private bool _disposed;

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            if (_view != null)
            {
                _view.SafeMemoryMappedViewHandle.ReleasePointer();
                _view.Dispose();
            }
            _map?.Dispose();
            _pointer = null;
        }
    }
}

/// <summary>Resolves real paths (following symlinks), so that external data cannot leave the model's folder.</summary>
internal static partial class RealPath
{
    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr realpath(string path, IntPtr resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void free(IntPtr p);

    /// <summary>The canonical absolute path with every symlink resolved, or null when it does not exist.</summary>
    public static string? Resolve(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            // Windows: resolve the final link target, then normalise.
            var info = new FileInfo(path);
            if (!info.Exists && !Directory.Exists(path)) return null;
            var target = info.ResolveLinkTarget(returnFinalTarget: true);
            return System.IO.Path.GetFullPath(target?.FullName ?? info.FullName);
        }
        IntPtr p = realpath(path, IntPtr.Zero);
        if (p == IntPtr.Zero) return null;
        try { return Marshal.PtrToStringUTF8(p); }
        finally { free(p); }
    }
}
