using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Quantc.Core.Numerics;

/// <summary>
/// A quantized weight matrix: integer values per element and a scale per output channel (per
/// channel) or per (output channel, group of K). Symmetric: value = q · scale.
/// Layout: row n is output channel n, columns run along K (the input features). Asymmetric weights
/// carry <see cref="ZeroPoints"/> (one per scale): value = (q − zero point) · scale.
/// </summary>
public sealed record QuantizedWeight(QuantFormat Format, int N, int K, int GroupSize, sbyte[] Values, float[] Scales,
    sbyte[]? ZeroPoints = null)
{
    private sbyte[]? _values = Values;
    private Quantc.Onnx.TensorData? _spilled;
    private readonly WeakReference<sbyte[]?> _readBack = new(null);
    private float[]? _scales = Scales;
    private Quantc.Onnx.TensorData? _spilledScales;
    private readonly WeakReference<float[]?> _scalesBack = new(null);

    /// <summary>The integer values, [N, K] row-major. After <see cref="SpillTo"/> each read returns a copy read back from the spill
    /// file (kept while the caller holds it): take it once into a local, not per element.</summary>
    public sbyte[] Values
    {
        get => _values ?? ReadBack();
        init => _values = value;
    }

    /// <summary>The scales, one per output channel or per (output channel, group), [N, Groups] row-major. After <see cref="SpillTo"/>
    /// read back like <see cref="Values"/>: take them once into a local.</summary>
    public float[] Scales
    {
        get => _scales ?? ReadBackScales();
        init => _scales = value;
    }

    /// <summary>
    /// This weight with its values (the bulk: one byte per weight element) and its scales (4 bytes per group: an eighth more at group
    /// size 32, 0.8 GB for a 7B model) moved to <paramref name="file"/>, so that a plan of a large model's rounded weights costs page
    /// cache, not resident memory.
    /// </summary>
    public QuantizedWeight SpillTo(Quantc.Onnx.SpillFile file)
    {
        if (_values is null) return this;
        var copy = this with { };
        copy._spilled = file.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_values.AsSpan()));
        copy._values = null;
        if (_scales is not null)
        {
            copy._spilledScales = file.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_scales.AsSpan()));
            copy._scales = null;
        }
        return copy;
    }

    private float[] ReadBackScales()
    {
        if (_scalesBack.TryGetTarget(out var v) && v is not null) return v;
        var bytes = _spilledScales!.Span;
        v = new float[bytes.Length / sizeof(float)];
        bytes.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
        _scalesBack.SetTarget(v);
        return v;
    }

    private sbyte[] ReadBack()
    {
        if (_readBack.TryGetTarget(out var v) && v is not null) return v;
        var bytes = _spilled!.Span;
        v = new sbyte[bytes.Length];
        bytes.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
        _readBack.SetTarget(v);
        return v;
    }

    /// <summary>Groups per row (1 for per channel).</summary>
    public int Groups => GroupSize == 0 ? 1 : K / GroupSize;

    /// <summary>Scale of element (n, k). On a spilled weight each call reads the scales back (or finds them still held): in a loop,
    /// take <see cref="Scales"/> once instead.</summary>
    public float ScaleAt(int n, int k) => Scales[n * Groups + (GroupSize == 0 ? 0 : k / GroupSize)];

    /// <summary>Zero point of element (n, k) (0 when symmetric).</summary>
    public int ZeroPointAt(int n, int k) => ZeroPoints is null ? 0 : ZeroPoints[n * Groups + (GroupSize == 0 ? 0 : k / GroupSize)];

    /// <summary>The dequantized matrix [N, K].</summary>
    public float[] Dequantize()
    {
        var w = new float[N * K];
        var values = Values;
        var scales = Scales;
        int groups = Groups;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++)
            {
                float scale = scales[n * groups + (GroupSize == 0 ? 0 : k / GroupSize)];
                w[n * K + k] = Format.IsFloat
                    ? Quantizer.Dequantize([(byte)values[n * K + k]], 1, Format, Quantizer.Layout.PerTensor(1), [scale])[0]
                    : (values[n * K + k] - ZeroPointAt(n, k)) * scale;
            }
        return w;
    }
}

/// <summary>Weight quantization: round-to-nearest (RTN) and GPTQ, symmetric, per channel or per group along K.</summary>
public static class WeightQuantizer
{
    /// <summary>The symmetric scale for a slice: absmax / qmax (1 for an all-zero slice).</summary>
    public static float ScaleFor(ReadOnlySpan<float> w, QuantFormat format)
    {
        float absmax = w.IsEmpty ? 0 : MathF.Abs(TensorPrimitives.MaxMagnitude(w));
        return absmax == 0 ? 1f : absmax / (float)format.Max;
    }

    private static void CheckShape(int n, int k, int groupSize, QuantFormat format)
    {
        if (format.IsFloat) throw new ArgumentException("weight quantization here is integer (int8/int4)");
        if (groupSize < 0 || (groupSize > 0 && k % groupSize != 0))
            throw new ArgumentException($"K = {k} is not a multiple of group size {groupSize}");
        if (n <= 0 || k <= 0) throw new ArgumentException("empty weight");
    }

    /// <summary>
    /// A float8 weight (e4m3fn or e5m2) with one per-tensor scale absmax / max_finite, rounded to nearest even and saturated
    /// as QuantizeLinear does; <paramref name="w"/> is [N, K]. The bytes are stored in <see cref="QuantizedWeight.Values"/>
    /// (reinterpreted), the scale repeated per row.
    /// </summary>
    public static QuantizedWeight Float8PerTensor(ReadOnlySpan<float> w, int n, int k, QuantFormat format)
    {
        if (!format.IsFloat) throw new ArgumentException($"{format.Name} is not a float8 format");
        if (n <= 0 || k <= 0 || w.Length != n * k) throw new ArgumentException("empty or mis-sized weight");
        float s = ScaleFor(w, format);
        var bytes = Quantizer.Quantize(w, format, s);
        var values = new sbyte[bytes.Length];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return new QuantizedWeight(format, n, k, 0, values, Enumerable.Repeat(s, n).ToArray());
    }

    /// <summary>Round-to-nearest (half to even, as QuantizeLinear) with absmax scales. <paramref name="w"/> is [N, K].</summary>
    public static QuantizedWeight Rtn(ReadOnlySpan<float> w, int n, int k, QuantFormat format, int groupSize = 0)
    {
        CheckShape(n, k, groupSize, format);
        int g = groupSize == 0 ? k : groupSize, groups = k / g;
        var q = new sbyte[n * k];
        var scales = new float[n * groups];
        // Rows are independent: a large weight's rows go to the thread pool in blocks (the same arithmetic per row, so the same bytes).
        const int RowsPerBlock = 64;
        if ((long)n * k < ParallelElements)
            RtnRows(w, 0, n, k, g, format, q, scales);
        else
            unsafe
            {
                fixed (float* p = w)
                {
                    nint address = (nint)p;
                    int length = w.Length;
                    Parallel.For(0, (n + RowsPerBlock - 1) / RowsPerBlock, b =>
                    {
                        var all = new ReadOnlySpan<float>((float*)address, length);
                        RtnRows(all, b * RowsPerBlock, Math.Min(n, (b + 1) * RowsPerBlock), k, g, format, q, scales);
                    });
                }
            }
        return new QuantizedWeight(format, n, k, groupSize, q, scales);
    }

    /// <summary>Weights of at least this many elements are rounded on the thread pool (<see cref="Rtn"/>).</summary>
    public const long ParallelElements = 1 << 18;

    private static void RtnRows(ReadOnlySpan<float> w, int from, int to, int k, int g, QuantFormat format, sbyte[] q, float[] scales)
    {
        int groups = k / g;
        bool vector = Vector256.IsHardwareAccelerated && format.Min >= sbyte.MinValue && format.Max <= sbyte.MaxValue;
        for (int r = from; r < to; r++)
            for (int gi = 0; gi < groups; gi++)
            {
                var slice = w.Slice(r * k + gi * g, g);
                float s = ScaleFor(slice, format);
                scales[r * groups + gi] = s;
                var dst = q.AsSpan(r * k + gi * g, g);
                int j = vector ? RoundVectors(slice, s, (float)format.Min, (float)format.Max, dst) : 0;
                for (; j < g; j++) dst[j] = (sbyte)Quantizer.QuantizeInt(slice[j], s, 0, format);
            }
    }

    // dst[j] = Quantizer.QuantizeInt(x[j], s, 0, format) for the whole 32-value blocks of x (the same IEEE division, rounding half
    // to even, NaN as 0, saturation); returns how many were done.
    private static int RoundVectors(ReadOnlySpan<float> x, float s, float min, float max, Span<sbyte> dst)
    {
        var vs = Vector256.Create(s);
        var lo = Vector256.Create(min);
        var hi = Vector256.Create(max);
        static Vector256<int> One(ReadOnlySpan<float> x, int at, Vector256<float> vs, Vector256<float> lo, Vector256<float> hi)
        {
            var v = Vector256.Create(x.Slice(at, 8)) / vs;
            var r = Vector256.Round(v) & Vector256.Equals(v, v);         // NaN → 0
            return Vector256.ConvertToInt32(Vector256.Max(Vector256.Min(r, hi), lo));
        }
        int j = 0;
        for (; j + 32 <= x.Length; j += 32)
            Vector256.Narrow(Vector256.Narrow(One(x, j, vs, lo, hi), One(x, j + 8, vs, lo, hi)),
                Vector256.Narrow(One(x, j + 16, vs, lo, hi), One(x, j + 24, vs, lo, hi))).CopyTo(dst.Slice(j, 32));
        return j;
    }

    /// <summary>
    /// Asymmetric round-to-nearest with min-max scales per channel (or group): the range [min(w, 0),
    /// max(w, 0)] is spread over the format's full grid and a zero point shifts it, as OutlierTune's
    /// reference code quantizes weights. <paramref name="w"/> is [N, K].
    /// </summary>
    public static QuantizedWeight RtnAsymmetric(ReadOnlySpan<float> w, int n, int k, QuantFormat format, int groupSize = 0)
    {
        CheckShape(n, k, groupSize, format);
        int g = groupSize == 0 ? k : groupSize, groups = k / g;
        var q = new sbyte[n * k];
        var scales = new float[n * groups];
        var zps = new sbyte[n * groups];
        double qmin = format.Min, qmax = format.Max;
        for (int r = 0; r < n; r++)
            for (int gi = 0; gi < groups; gi++)
            {
                var slice = w.Slice(r * k + gi * g, g);
                float lo = Math.Min(TensorPrimitives.Min(slice), 0f), hi = Math.Max(TensorPrimitives.Max(slice), 0f);
                float s = hi > lo ? (float)((hi - lo) / (qmax - qmin)) : 1f;
                int zp = (int)Math.Clamp(Math.Round(qmin - lo / s, MidpointRounding.ToEven), qmin, qmax);
                scales[r * groups + gi] = s;
                zps[r * groups + gi] = (sbyte)zp;
                for (int j = 0; j < g; j++) q[r * k + gi * g + j] = (sbyte)Quantizer.QuantizeInt(slice[j], s, zp, format);
            }
        return new QuantizedWeight(format, n, k, groupSize, q, scales, zps);
    }

    /// <summary>
    /// GPTQ (Frantar et al., 2023): quantizes K columns one at a time and spreads each column's
    /// rounding error over the not-yet-quantized columns through the inverse Hessian of the layer's
    /// reconstruction loss, H = 2·XᵀX from calibration inputs X [tokens, K]. <paramref name="hessian"/>
    /// is H (K×K, row-major); <paramref name="damp"/> adds damp·mean(diag H) to the diagonal. Group scales
    /// are chosen from the error-updated weights when a group starts, as the reference implementation does.
    /// </summary>
    public static QuantizedWeight Gptq(ReadOnlySpan<float> w, int n, int k, ReadOnlySpan<double> hessian, QuantFormat format,
        int groupSize = 0, double damp = 0.01)
    {
        CheckShape(n, k, groupSize, format);
        if (hessian.Length != k * k) throw new ArgumentException($"the Hessian must be {k}×{k}");
        return Gptq(w, n, k, GptqFactor.Of(hessian.ToArray(), k, damp), format, groupSize);
    }

    /// <summary>GPTQ with the factor of the input's Hessian made once (<see cref="GptqFactor.Of"/>) for every layer that reads that
    /// input; the same result as the overload that takes the Hessian. Output rows are independent: blocks of rows run in parallel.
    /// Within a row the error of column i is taken from every later column in ascending i, as the textbook loop does, but by tiles
    /// of columns: inside a tile at once, beyond it once the tile is done, a strip of columns at a time (bit-identical, and the
    /// rows' strips stay in cache while the factor's tile rows pass over them).</summary>
    public static QuantizedWeight Gptq(ReadOnlySpan<float> w, int n, int k, GptqFactor factor, QuantFormat format, int groupSize = 0)
    {
        CheckShape(n, k, groupSize, format);
        if (factor.K != k) throw new ArgumentException($"the Hessian factor is {factor.K} wide, the weight {k}");
        var weights = w.ToArray();
        int g = groupSize == 0 ? k : groupSize, groups = k / g;
        // A tile is a whole number of groups, so that a group's scale is chosen from columns that have every earlier error.
        int tile = g >= k ? Math.Min(k, 64) : g * Math.Max(1, 64 / g);
        var q = new sbyte[n * k];
        var scales = new float[n * groups];
        const int rows = 32;
        Parallel.For(0, (n + rows - 1) / rows, b =>
        {
            int r0 = b * rows, r1 = Math.Min(n, r0 + rows);
            new GptqRows(factor, format, k, g, tile, r0, r1).Run(weights, q, scales);
        });
        return new QuantizedWeight(format, n, k, groupSize, q, scales);
    }

    /// <summary>GPTQ of output rows [r0, r1) (see <see cref="Gptq(ReadOnlySpan{float}, int, int, GptqFactor, QuantFormat, int)"/>).
    /// </summary>
    private sealed class GptqRows(GptqFactor factor, QuantFormat format, int k, int g, int tile, int r0, int r1)
    {
        public void Run(float[] w, sbyte[] q, float[] scales)
        {
            Run(w, q, scales, new double[(r1 - r0) * k], new double[tile * (ColumnBlock + Cols)]);
        }

        private void Run(float[] w, sbyte[] q, float[] scales, double[] work, double[] strips)
        {
            int n = r1 - r0, groups = k / g;
            var u = factor.Upper;
            for (int i = 0; i < n * k; i++) work[i] = w[r0 * k + i];
            // Dead inputs (never active in calibration): zero their weights.
            for (int i = 0; i < k; i++)
                if (factor.Dead[i])
                    for (int r = 0; r < n; r++) work[r * k + i] = 0;
            var colScale = new float[n];
            var slice = new float[g];
            var err = new double[n * tile];
            var acc = new double[DoubleStrips.TileRows * Cols];
            for (int i0 = 0; i0 < k; i0 += tile)
            {
                int i1 = Math.Min(k, i0 + tile);
                for (int i = i0; i < i1; i++)
                {
                    if (i % g == 0)
                        for (int r = 0; r < n; r++)
                        {
                            for (int j = 0; j < g; j++) slice[j] = (float)work[r * k + i + j];
                            colScale[r] = ScaleFor(slice, format);
                            scales[(r0 + r) * groups + i / g] = colScale[r];
                        }
                    double d = u[i * k + i];
                    for (int r = 0; r < n; r++)
                    {
                        double wi = work[r * k + i];
                        int qi = Quantizer.QuantizeInt((float)wi, colScale[r], 0, format);
                        q[(r0 + r) * k + i] = (sbyte)qi;
                        double e = (wi - qi * (double)colScale[r]) / d;
                        err[r * tile + i - i0] = e;
                        GptqFactor.Add(work.AsSpan(r * k + i + 1, i1 - i - 1), -e, u.AsSpan(i * k + i + 1, i1 - i - 1));   // work −= e·u
                    }
                }
                // The tile's errors, taken from the columns after it (work − e·u is work + (−e)·u bit for bit): by blocks of columns
                // whose tile rows of the factor are first copied into strips of 8 columns (the factor's rows are K apart, often a
                // multiple of 4 KiB, which a walk down a column would crowd into one cache set), then 4 rows × 8 columns at a time
                // as one register tile of sums over the tile's errors, in ascending i.
                int terms = i1 - i0;
                for (int b0 = i1; b0 < k; b0 += ColumnBlock)
                {
                    int b1 = Math.Min(k, b0 + ColumnBlock);
                    int padded = (b1 - b0 + Cols - 1) / Cols * Cols;              // a ragged last strip gets zeros
                    for (int i = i0; i < i1; i++)
                        for (int j = 0; j < padded; j++)
                            strips[((long)(j / Cols) * terms + i - i0) * Cols + j % Cols] = b0 + j < b1 ? u[i * k + b0 + j] : 0;
                    for (int rg = 0; rg < n; rg += DoubleStrips.TileRows)
                    {
                        int rows = Math.Min(DoubleStrips.TileRows, n - rg);
                        for (int j0 = b0; j0 < b1; j0 += Cols)
                        {
                            int width = Math.Min(Cols, b1 - j0);
                            long strip = (long)(j0 - b0) / Cols * terms * Cols;
                            if (width == Cols)                                   // the sums in place, in the rows of work
                            {
                                DoubleStrips.TileInPlace<DoubleStrips.Sub>(work, (long)rg * k + j0, k, rows, err, (long)rg * tile, tile,
                                    strips, strip, Cols, 0, terms);
                                continue;
                            }
                            Array.Clear(acc);
                            for (int r = 0; r < rows; r++) Array.Copy(work, (rg + r) * k + j0, acc, r * Cols, width);
                            DoubleStrips.Tile<DoubleStrips.Sub>(acc, rows, err, (long)rg * tile, tile, strips, strip, Cols, 0, terms);
                            for (int r = 0; r < rows; r++) Array.Copy(acc, r * Cols, work, (rg + r) * k + j0, width);
                        }
                    }
                }
            }
        }

        private const int Cols = DoubleStrips.TileColumns;

        /// <summary>Columns per block of the update after a tile: the tile's rows of the factor over them, 64 × 512 × 8 B, stay in
        /// the level-2 cache.</summary>
        private const int ColumnBlock = 512;
    }

    /// <summary>Accumulates H += 2·XᵀX for inputs <paramref name="x"/> [tokens, K] (double precision).</summary>
    public static void AccumulateHessian(Span<double> h, ReadOnlySpan<float> x, int k)
    {
        int tokens = x.Length / k;
        var wide = new double[k];
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * k, k);
            for (int j = 0; j < k; j++) wide[j] = row[j];
            for (int i = 0; i < k; i++)
            {
                double xi = 2.0 * row[i];
                if (xi == 0) continue;
                GptqFactor.Add(h.Slice(i * k, k), xi, wide);      // h[i,j] += xi·x[j], j ascending: the scalar loop's sums
            }
        }
    }

    /// <summary>
    /// The lower triangle (diagonal included) of H += 2·XᵀX for inputs <paramref name="x"/> [tokens, K], all that
    /// <see cref="GptqFactor.Of"/> reads; the strict upper triangle is left alone. Each element gets the same sums, in the same
    /// (token) order, as in <see cref="AccumulateHessian(Span{double}, ReadOnlySpan{float}, int)"/>, bit for bit. Tokens go by chunks
    /// of 64: the chunk's 2·x[t, i] packed per row i and its x[t, j] per tile of 8 columns, then every 4 rows × 8 columns of the
    /// triangle as one register tile of sums over the chunk's tokens (<see cref="DoubleStrips.Tile{TOp}"/>), 16 rows per task on the
    /// thread pool, tile by tile so that a tile's columns serve the 16 rows from cache. A term with 2·x[t, i] = 0 adds ±0, which
    /// leaves a sum unchanged as long as x[t, j] is finite: a chunk with a value that is not goes through the element loops, which
    /// skip such terms as the reference does.
    /// </summary>
    public static void AccumulateLowerHessian(double[] h, ReadOnlySpan<float> x, int k)
    {
        if (h.Length != (long)k * k) throw new ArgumentException($"the Hessian must be {k}×{k}");
        int tiles = (k + C - 1) / C;
        // Plain arrays, not ArrayPool.Shared: the shared pool keeps one per thread and size for good (≈ 90 MB more at the 1b
        // model's peak), where these die with the call.
        AccumulateByTiles(h, x, k, new double[(long)k * Chunk], new double[(long)tiles * Chunk * C]);
    }

    /// <summary>rowsOf[i·64 + t] = 2·x[t, i] and tilesOf[(tile·64 + t)·8 + c] = x[t, 8·tile + c], per chunk of 64 tokens.</summary>
    private static void AccumulateByTiles(double[] h, ReadOnlySpan<float> x, int k, double[] rowsOf, double[] tilesOf)
    {
        int tokens = x.Length / k, tiles = (k + C - 1) / C;
        for (int t0 = 0; t0 < tokens; t0 += Chunk)
        {
            int count = Math.Min(Chunk, tokens - t0);
            var part = x.Slice(t0 * k, count * k);
            if (!AllFinite(part))
            {
                AccumulateLowerHessianElementwise(h, part, k);
                continue;
            }
            Array.Clear(tilesOf, 0, tiles * Chunk * C);
            for (int t = 0; t < count; t++)
            {
                var row = part.Slice(t * k, k);
                for (int i = 0; i < k; i++)
                {
                    rowsOf[(long)i * Chunk + t] = 2.0 * row[i];
                    tilesOf[((long)(i / C) * Chunk + t) * C + i % C] = row[i];
                }
            }
            int panels = (k + R - 1) / R;
            Parallel.For(0, (panels + PanelsPerTask - 1) / PanelsPerTask, () => new double[R * C], (task, _, acc) =>
            {
                int p0 = task * PanelsPerTask, p1 = Math.Min(panels, p0 + PanelsPerTask), last = Math.Min(k, p1 * R) - 1;
                for (int j0 = 0; j0 <= last; j0 += C)
                    for (int p = p0; p < p1; p++)
                    {
                        int i0 = p * R, rows = Math.Min(R, k - i0);
                        if (j0 > i0 + rows - 1) continue;
                        for (int r = 0; r < rows; r++)
                            for (int c = 0; c < C; c++) acc[r * C + c] = j0 + c <= i0 + r ? h[(long)(i0 + r) * k + j0 + c] : 0;
                        DoubleStrips.Tile<DoubleStrips.Add>(acc, rows, rowsOf, (long)i0 * Chunk, Chunk, tilesOf,
                            (long)(j0 / C) * Chunk * C, C, 0, count);
                        for (int r = 0; r < rows; r++)
                            for (int c = 0; c < Math.Min(C, i0 + r - j0 + 1); c++) h[(long)(i0 + r) * k + j0 + c] = acc[r * C + c];
                    }
                return acc;
            }, _ => { });
        }
    }

    private const int R = DoubleStrips.TileRows, C = DoubleStrips.TileColumns, Chunk = 64, PanelsPerTask = 4;

    private static bool AllFinite(ReadOnlySpan<float> x)
    {
        foreach (float v in x)
            if (!float.IsFinite(v)) return false;
        return true;
    }

    /// <summary><see cref="AccumulateLowerHessian"/> element by element, terms with 2·x[t, i] = 0 skipped (the reference's loop).
    /// </summary>
    internal static void AccumulateLowerHessianElementwise(double[] h, ReadOnlySpan<float> x, int k)
    {
        int tokens = x.Length / k;
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * k, k);
            for (int i = 0; i < k; i++)
            {
                double xi = 2.0 * row[i];
                if (xi == 0) continue;
                for (int j = 0; j <= i; j++) h[(long)i * k + j] += xi * row[j];
            }
        }
    }
}
