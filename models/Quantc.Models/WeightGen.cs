using System.Runtime.InteropServices;
using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>
/// A seeded float32 weight, described rather than stored: i.i.d. normals from a
/// <see cref="RandomStream"/>, times a per-row and a per-column scale, plus a few entries set
/// outright. Any range of elements can be generated on its own (so a 4 GB model is written
/// by streaming, never held whole), and the result is the same bytes on every machine.
/// The layout is row-major [rows, cols]; for linear layers rows are input channels.
/// </summary>
public sealed class WeightGen
{
    private readonly Dictionary<long, float> _overrides = [];
    private long[]? _overrideKeys;

    public WeightGen(RandomStream stream, long rows, long cols, double std, double mean = 0)
    {
        Stream = stream;
        Rows = rows;
        Cols = cols;
        Std = std;
        Mean = mean;
    }

    public RandomStream Stream { get; }
    public long Rows { get; }
    public long Cols { get; }
    public double Std { get; }
    /// <summary>Added to every element before scaling (e.g. 1 for norm weights).</summary>
    public double Mean { get; }
    public long Count => Rows * Cols;

    /// <summary>Per-row factors (null: all 1).</summary>
    public float[]? RowScale { get; private set; }
    /// <summary>Per-column factors (null: all 1).</summary>
    public float[]? ColScale { get; private set; }

    /// <summary>Multiplies row <paramref name="r"/> by <paramref name="f"/>.</summary>
    public WeightGen ScaleRow(long r, float f)
    {
        RowScale ??= Enumerable.Repeat(1f, checked((int)Rows)).ToArray();
        RowScale[r] *= f;
        return this;
    }

    /// <summary>Multiplies column <paramref name="c"/> by <paramref name="f"/>.</summary>
    public WeightGen ScaleCol(long c, float f)
    {
        ColScale ??= Enumerable.Repeat(1f, checked((int)Cols)).ToArray();
        ColScale[c] *= f;
        return this;
    }

    /// <summary>Sets element (<paramref name="r"/>, <paramref name="c"/>) to <paramref name="v"/> (after scaling).</summary>
    public WeightGen Set(long r, long c, float v)
    {
        if (r < 0 || r >= Rows || c < 0 || c >= Cols)
            throw new ArgumentOutOfRangeException(nameof(r), $"({r},{c}) outside [{Rows},{Cols}]");
        _overrides[r * Cols + c] = v;
        _overrideKeys = null;
        return this;
    }

    /// <summary>Generates elements [<paramref name="start"/>, start + dst.Length).</summary>
    public void Fill(long start, Span<float> dst)
    {
        Stream.FillNormal(start, dst, Std);
        if (Mean != 0) for (int k = 0; k < dst.Length; k++) dst[k] = (float)(Mean + dst[k]);
        if (RowScale is not null || ColScale is not null)
        {
            long r = start / Cols, c = start % Cols;
            for (int k = 0; k < dst.Length; k++)
            {
                float f = (RowScale?[r] ?? 1f) * (ColScale?[c] ?? 1f);
                if (f != 1f) dst[k] *= f;
                if (++c == Cols) { c = 0; r++; }
            }
        }
        if (_overrides.Count > 0)
        {
            _overrideKeys ??= _overrides.Keys.Order().ToArray();
            long end = start + dst.Length;
            int i = Array.BinarySearch(_overrideKeys, start);
            if (i < 0) i = ~i;
            for (; i < _overrideKeys.Length && _overrideKeys[i] < end; i++)
                dst[(int)(_overrideKeys[i] - start)] = _overrides[_overrideKeys[i]];
        }
    }

    /// <summary>All elements (for small tensors).</summary>
    public float[] ToArray()
    {
        var a = new float[checked((int)Count)];
        Fill(0, a);
        return a;
    }

    /// <summary>
    /// A tensor over this weight: generated into memory when it is at most
    /// <paramref name="materializeBytes"/>, else generated chunk by chunk whenever its bytes are read.
    /// </summary>
    public Tensor ToTensor(string name, long[] dims, long materializeBytes)
    {
        if (dims.Aggregate(1L, (a, d) => a * d) != Count) throw new ArgumentException($"{name}: dims do not match {Rows}x{Cols}");
        if (Count * 4 <= materializeBytes) return Tensor.FromFloats(name, dims, ToArray());
        return Tensor.FromData(name, (int)DT.Float, dims, new GeneratedTensorData(this));
    }
}

/// <summary>
/// Tensor bytes produced on demand from a <see cref="WeightGen"/> (float32, little-endian).
/// Reading a slice generates just that slice; <see cref="CopyTo"/> streams the whole tensor
/// in chunks generated in parallel, so memory stays flat however large the tensor.
/// </summary>
public sealed class GeneratedTensorData(WeightGen gen) : TensorData
{
    private const int ChunkFloats = 1 << 20;

    public WeightGen Generator { get; } = gen;

    public override long Length => Generator.Count * 4;

    public override ReadOnlySpan<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > Length) throw new ArgumentOutOfRangeException(nameof(offset));
        long first = offset / 4, last = (offset + length + 3) / 4;
        var floats = new float[last - first];
        Generator.Fill(first, floats);
        return MemoryMarshal.AsBytes(floats.AsSpan()).Slice((int)(offset - first * 4), length);
    }

    public override void CopyTo(Stream destination)
    {
        long count = Generator.Count;
        int chunks = (int)((count + ChunkFloats - 1) / ChunkFloats);
        // Generate a few chunks ahead in parallel, write them in order.
        int window = Math.Max(1, Environment.ProcessorCount);
        var buffers = new float[window][];
        for (int first = 0; first < chunks; first += window)
        {
            int n = Math.Min(window, chunks - first);
            Parallel.For(0, n, k =>
            {
                long start = (long)(first + k) * ChunkFloats;
                int len = (int)Math.Min(ChunkFloats, count - start);
                var buf = buffers[k] is { } b && b.Length == len ? b : buffers[k] = new float[len];
                Generator.Fill(start, buf);
            });
            for (int k = 0; k < n; k++) destination.Write(MemoryMarshal.AsBytes(buffers[k].AsSpan()));
        }
    }
}
