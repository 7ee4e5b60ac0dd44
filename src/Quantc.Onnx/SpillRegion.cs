namespace Quantc.Onnx;

/// <summary>
/// A fixed-size stretch of a <see cref="SpillFile"/> that is written and read at any offset inside it, any number of times
/// (<see cref="SpillFile.Reserve"/>): scratch data of a pass that would otherwise stay resident — a reservoir of sampled
/// activation rows, rewritten in place while a calibration runs. Bytes never written read back as zeros. Writes to
/// different places may come from different threads; the caller orders writes and reads of one place.
/// </summary>
public sealed class SpillRegion
{
    private readonly SpillFile _file;
    private readonly long _offset;

    internal SpillRegion(SpillFile file, long offset, long length)
    {
        _file = file;
        _offset = offset;
        Length = length;
    }

    /// <summary>The region's size in bytes.</summary>
    public long Length { get; }

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="at"/> (relative to the region).</summary>
    public void Write(long at, ReadOnlySpan<byte> bytes)
    {
        Check(at, bytes.Length);
        _file.WriteAt(_offset + at, bytes);
    }

    /// <summary>Reads <paramref name="destination"/>.Length bytes from <paramref name="at"/> (relative to the region).</summary>
    public void Read(long at, Span<byte> destination)
    {
        Check(at, destination.Length);
        _file.Read(_offset + at, destination);
    }

    private void Check(long at, int length)
    {
        if (at < 0 || length < 0 || at + length > Length)
            throw new ArgumentOutOfRangeException(nameof(at), $"[{at}, {at + length}) is outside the region's {Length} bytes");
    }
}
