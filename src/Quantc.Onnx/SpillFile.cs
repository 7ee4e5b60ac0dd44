using Microsoft.Win32.SafeHandles;

namespace Quantc.Onnx;

/// <summary>
/// A temporary file that holds the bytes of tensors a compile made (rewritten weights, packed integer weights) instead of
/// managed memory: written once, read back with positioned reads (pread), never mapped, so the bytes live in the kernel's
/// page cache and not in the process's resident set. The file is unlinked as soon as it is open (nothing stays on disk
/// after a crash) and closed with <see cref="Dispose"/>.
/// </summary>
public sealed class SpillFile : IDisposable
{
    private readonly object _gate = new();
    private readonly FileStream _file;
    private long _end;

    public SpillFile(string? folder = null)
    {
        folder ??= Path.GetTempPath();
        string path = Path.Combine(folder, $"quantc-spill-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        _file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read | FileShare.Delete, 1,
            OperatingSystem.IsWindows() ? FileOptions.DeleteOnClose : FileOptions.None);
        if (!OperatingSystem.IsWindows()) File.Delete(path);
    }

    /// <summary>Bytes written so far.</summary>
    public long Length
    {
        get { lock (_gate) return _end; }
    }

    /// <summary>The open file (for kernel copies out of it).</summary>
    internal FileStream Stream => _file;

    /// <summary>Appends <paramref name="bytes"/> and returns tensor data that reads them back from the file.</summary>
    public TensorData Write(ReadOnlySpan<byte> bytes)
    {
        long offset;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            offset = _end;
            _end += bytes.Length;
        }
        RandomAccess.Write(_file.SafeFileHandle, bytes, offset);
        return new SpilledTensorData(this, offset, bytes.Length);
    }

    /// <summary>Sets aside <paramref name="length"/> bytes of the file for a pass to write and read in place (nothing is written: the
    /// file grows by a hole until the region is).</summary>
    public SpillRegion Reserve(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        long offset;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            offset = _end;
            _end += length;
            _file.SetLength(_end);     // a hole: reads of what was never written give zeros, not the end of the file
        }
        return new SpillRegion(this, offset, length);
    }

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="offset"/> of the file (inside a reserved region).</summary>
    internal void WriteAt(long offset, ReadOnlySpan<byte> bytes) => RandomAccess.Write(_file.SafeFileHandle, bytes, offset);

    /// <summary>Reads [offset, offset + destination.Length) of the file into <paramref name="destination"/>.</summary>
    internal void Read(long offset, Span<byte> destination)
    {
        SafeFileHandle h = _file.SafeFileHandle;
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(h, destination, offset);
            if (n <= 0) throw new EndOfStreamException("the spill file ended early");
            destination = destination[n..];
            offset += n;
        }
    }

    private bool _disposed;

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _file.Dispose();
    }
}

/// <summary>Tensor bytes kept in a <see cref="SpillFile"/>. Each read returns a fresh copy (the whole tensor's is cached weakly, so a
/// caller that asks for the span again and again reads the file once while the copy lives).</summary>
public sealed class SpilledTensorData : TensorData
{
    private readonly SpillFile _file;
    private readonly long _offset;
    private readonly long _length;
    private readonly WeakReference<byte[]?> _whole = new(null);

    internal SpilledTensorData(SpillFile file, long offset, long length)
    {
        _file = file;
        _offset = offset;
        _length = length;
    }

    public override long Length => _length;

    public override ReadOnlySpan<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > _length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (length == 0) return ReadOnlySpan<byte>.Empty;
        bool whole = offset == 0 && length == _length;
        if (whole && _whole.TryGetTarget(out var cached) && cached is not null) return cached;
        var bytes = GC.AllocateUninitializedArray<byte>(length);
        _file.Read(_offset + offset, bytes);
        if (whole) _whole.SetTarget(bytes);
        return bytes;
    }

    /// <summary>Streams the bytes out of the spill file (into a file: copied inside the kernel, as for mapped data).</summary>
    public override void CopyTo(Stream destination)
    {
        long done = destination is FileStream dst && OperatingSystem.IsLinux() ? KernelCopy.Copy(_file.Stream, _offset, dst, _length) : 0;
        const int chunk = 4 << 20;
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(chunk);
        try
        {
            for (long off = done; off < _length; off += chunk)
            {
                int n = (int)Math.Min(chunk, _length - off);
                _file.Read(_offset + off, buffer.AsSpan(0, n));
                destination.Write(buffer, 0, n);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
