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

    /// <summary>Gives the pages of this slice back (see <see cref="MappedFile.DropPages"/>): read again, they come from the page
    /// cache.</summary>
    public void DropPages() => File.DropPages(Offset, _length);

    /// <summary>
    /// Streams the slice from the file rather than through the mapping: pages read through a map
    /// count in the process's resident memory, file reads go through the page cache only, so copying
    /// a model of any size keeps memory flat. Into a file on Linux the kernel copies the bytes itself
    /// (copy_file_range, as cp does: no trip through user memory); elsewhere, plain reads and writes.
    /// </summary>
    public override void CopyTo(Stream destination)
    {
        using var fs = new FileStream(File.Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1,
            FileOptions.SequentialScan);
        long done = destination is FileStream dst && OperatingSystem.IsLinux() ? KernelCopy.Copy(fs, Offset, dst, _length) : 0;
        if (done == _length) return;
        fs.Position = Offset + done;
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(4 << 20);
        try
        {
            long left = _length - done;
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

/// <summary>File-to-file copies inside the kernel (Linux copy_file_range).</summary>
internal static partial class KernelCopy
{
    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    private static unsafe partial nint copy_file_range(int fdIn, long* offIn, int fdOut, long* offOut, nuint len, uint flags);

    /// <summary>
    /// Copies up to <paramref name="length"/> bytes from <paramref name="source"/> at <paramref name="offset"/> to
    /// <paramref name="destination"/> at its position, and moves that position past them. Returns how many bytes
    /// were copied: fewer (possibly 0) when the kernel cannot copy between these files (other file systems,
    /// old kernels), and the caller copies the rest itself.
    /// </summary>
    public static unsafe long Copy(FileStream source, long offset, FileStream destination, long length)
    {
        destination.Flush(); // bytes still in the stream's buffer go first
        long inPos = offset, outPos = destination.Position, done = 0;
        bool addIn = false, addOut = false;
        try
        {
            source.SafeFileHandle.DangerousAddRef(ref addIn);
            destination.SafeFileHandle.DangerousAddRef(ref addOut);
            int fdIn = (int)source.SafeFileHandle.DangerousGetHandle();
            int fdOut = (int)destination.SafeFileHandle.DangerousGetHandle();
            while (done < length)
            {
                nint n = copy_file_range(fdIn, &inPos, fdOut, &outPos, (nuint)Math.Min(length - done, 1L << 30), 0);
                if (n <= 0)
                {
                    if (n < 0 && Marshal.GetLastPInvokeError() == 4 /* EINTR */) continue;
                    break; // unsupported here, or an error the plain copy will report properly
                }
                done += n;
            }
        }
        catch (EntryPointNotFoundException) { }
        finally
        {
            if (addIn) source.SafeFileHandle.DangerousRelease();
            if (addOut) destination.SafeFileHandle.DangerousRelease();
        }
        if (done > 0) destination.Seek(done, SeekOrigin.Current);
        return done;
    }

    [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
    private static partial int sync_file_range(int fd, long offset, long nbytes, uint flags);

    /// <summary>Asks the kernel to start writing <paramref name="file"/>'s bytes [offset, offset + length) to disk now, without waiting
    /// (Linux; a no-op elsewhere).</summary>
    public static void StartWriteBack(FileStream file, long offset, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0) return;
        file.Flush();
        bool added = false;
        try
        {
            file.SafeFileHandle.DangerousAddRef(ref added);
            sync_file_range((int)file.SafeFileHandle.DangerousGetHandle(), offset, length, 2 /* SYNC_FILE_RANGE_WRITE */);
        }
        catch (EntryPointNotFoundException) { }
        finally
        {
            if (added) file.SafeFileHandle.DangerousRelease();
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
                    _map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None,
                        leaveOpen: false);
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

    /// <summary>
    /// Takes the pages of [offset, offset + length) out of this process's resident memory (Linux madvise MADV_DONTNEED; a
    /// no-op elsewhere or before the file is mapped). The map is read-only and shared, so nothing is lost: the bytes stay
    /// in the kernel's page cache and a later read maps them again. Pages read through a map count in the process's
    /// resident set until then, which for a model of several GiB read weight by weight is the whole model.
    /// </summary>
    public void DropPages(long offset = 0, long length = -1)
    {
        if (!OperatingSystem.IsLinux()) return;
        lock (_gate)
        {
            if (_pointer == null || _disposed) return;
            if (length < 0) length = Length - offset;
            long page = Environment.SystemPageSize;
            long start = offset / page * page;                       // whole pages, rounded outwards: dropping more is harmless
            long end = Math.Min(Length, offset + length);
            if (end <= start) return;
            long misalign = (long)_pointer % page;                   // the view's base may sit inside a page
            byte* from = _pointer + start - misalign;
            long bytes = end - start + misalign;
            bytes = (bytes + page - 1) / page * page;
            PageAdvice.DontNeed(from, bytes);
        }
    }

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

/// <summary>madvise for <see cref="MappedFile.DropPages"/>.</summary>
internal static unsafe partial class PageAdvice
{
    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int madvise(void* address, nuint length, int advice);

    /// <summary>MADV_DONTNEED over whole pages; failures are ignored (the pages then simply stay resident).</summary>
    public static void DontNeed(byte* address, long length)
    {
        try { madvise(address, (nuint)length, 4 /* MADV_DONTNEED */); }
        catch (EntryPointNotFoundException) { }
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
