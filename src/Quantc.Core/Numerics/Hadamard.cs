using System.Runtime.Intrinsics;

namespace Quantc.Core.Numerics;

/// <summary>
/// Hadamard matrices of order n = 2^k · m, m ∈ {1, 12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172}:
/// H_n = H_m ⊗ H_{2^k} (Sylvester for the power of two; Paley's constructions for m up to 140; the
/// Goethals–Seidel array over four searched circulants for 156 and 172). Exactly the
/// matrices custom-ops/cpu/hadamard.cpp builds, so a rotation fused into weights here is undone by
/// the online ai.quantc.Hadamard op there (tests check they agree).
/// </summary>
public static class Hadamard
{
    /// <summary>The supported non-power-of-two orders m.</summary>
    public static IReadOnlyList<int> Orders { get; } = [12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172];

    /// <summary>Splits n = 2^k · m with a supported m (the smallest); false when impossible.</summary>
    public static bool TrySplit(long n, out long pow2, out int m)
    {
        pow2 = 0;
        m = 0;
        if (n <= 0) return false;
        if ((n & (n - 1)) == 0) { pow2 = n; m = 1; return true; }
        foreach (int order in Orders)
        {
            if (n % order != 0) continue;
            long rest = n / order;
            if ((rest & (rest - 1)) == 0) { pow2 = rest; m = order; return true; }
        }
        return false;
    }

    /// <summary>True when a Hadamard matrix of order <paramref name="n"/> is available.</summary>
    public static bool IsSupported(long n) => TrySplit(n, out _, out _);

    /// <summary>The m×m base matrix (±1, row-major) for m = 1 or a supported order.</summary>
    public static sbyte[] BaseMatrix(int m) => m switch
    {
        1 => [1],
        12 => Paley1(11),
        20 => Paley1(19),
        28 => Paley2(13, 1),
        36 => Paley2(17, 1),
        40 => Doubled(Paley1(19), 20),
        44 => Paley1(43),
        52 => Paley2(5, 2),
        60 => Paley1(59),
        108 => Paley1(107),
        140 => Paley1(139),
        156 or 172 => GoethalsSeidel(GoethalsSeidelSequences(m)!),
        _ => throw new ArgumentException($"no Hadamard base matrix of order {m}"),
    };

    /// <summary>The full n×n matrix H_n (entries ±1), row-major, as float. For tests and the portable (MatMul) lowering.</summary>
    public static float[] Matrix(long n)
    {
        if (!TrySplit(n, out long p2, out int m)) throw new ArgumentException($"no Hadamard matrix of order {n}");
        var hm = BaseMatrix(m);
        var h = new float[n * n];
        for (long i = 0; i < n; i++)
            for (long j = 0; j < n; j++)
            {
                long a = i / p2, b = i % p2, c = j / p2, d = j % p2;
                int sylvester = (System.Numerics.BitOperations.PopCount((ulong)(b & d)) & 1) == 1 ? -1 : 1;
                h[i * n + j] = hm[a * m + c] * sylvester;
            }
        return h;
    }

    /// <summary>
    /// W' = H_k·W / k for a [k, n] row-major float matrix, in place, by the fast transform: H_k = H_m ⊗ H_{2^j}, so each column gets
    /// Walsh–Hadamard butterflies within its m segments of 2^j rows, then the segments are mixed by the m×m base matrix — k·(j + m)
    /// additions per column instead of k² (the 1b model's 5632-row down_proj: 51 instead of 5632 per element; 442 s of a 12-min
    /// compile went to the k² sum). All in double, divided by k and rounded to float once: the double sums carry a relative
    /// error below (j + m)·2⁻⁵³ of the column's magnitude, so an element can differ from the exact value's float rounding only
    /// when that value lies within that margin of a rounding boundary (at most one float ulp). Sixteen columns at a time (four
    /// 4-wide double vectors per row, one lane per column), blocks of columns on the thread pool; the arithmetic per element does
    /// not depend on the blocking or the threads. <c>online_hadamard</c> fuses the inverse of its rotation into the layer's
    /// weight with it.
    /// </summary>
    public static void FuseIntoColumns(float[] w, long k, long n)
    {
        if (w.LongLength != k * n) throw new ArgumentException($"weight of {w.LongLength} elements is not {k} × {n}", nameof(w));
        if (!TrySplit(k, out long p2L, out int m)) throw new ArgumentException($"no Hadamard matrix of order {k}");
        var hm = BaseMatrix(m);
        int kk = (int)k, nn = (int)n, p2 = (int)p2L;
        const int Block = 16;
        int blocks = (nn + Block - 1) / Block;
        Parallel.For(0, blocks, () => (new double[kk * Block], m > 1 ? new double[kk * Block] : []), (b, _, buffers) =>
        {
            var (a, mixed) = buffers;
            int c0 = b * Block, width = Math.Min(Block, nn - c0);
            // The block's columns side by side ([k, 16] double; a short last block is zero-padded and its extra lanes dropped).
            for (int j = 0; j < kk; j++)
                for (int l = 0; l < Block; l++) a[j * Block + l] = l < width ? w[(long)j * nn + c0 + l] : 0.0;
            for (int seg = 0; seg < m; seg++) Butterflies(a.AsSpan(seg * p2 * Block, p2 * Block), p2);
            var result = a;
            if (m > 1)
            {
                // Row r of segment s: Σ_c hm[s, c] · row r of segment c.
                int segment = p2 * Block;
                Array.Clear(mixed);
                for (int s = 0; s < m; s++)
                {
                    var dst = mixed.AsSpan(s * segment, segment);
                    for (int c = 0; c < m; c++)
                    {
                        var src = a.AsSpan(c * segment, segment);
                        if (hm[s * m + c] > 0) System.Numerics.Tensors.TensorPrimitives.Add(dst, src, dst);
                        else System.Numerics.Tensors.TensorPrimitives.Subtract(dst, src, dst);
                    }
                }
                result = mixed;
            }
            for (int i = 0; i < kk; i++)
                for (int l = 0; l < width; l++) w[(long)i * nn + c0 + l] = (float)(result[i * Block + l] / kk);
            return buffers;
        }, _ => { });
    }

    /// <summary>Walsh–Hadamard butterflies down the rows of a [<paramref name="rows"/>, 16] double block (Sylvester order), sixteen
    /// columns at once.</summary>
    private static void Butterflies(Span<double> v, int rows)
    {
        const int Block = 16;
        for (int h = 1; h < rows; h <<= 1)
            for (int i = 0; i < rows; i += h << 1)
                for (int j = i; j < i + h; j++)
                {
                    var x = v.Slice(j * Block, Block);
                    var y = v.Slice((j + h) * Block, Block);
                    for (int q = 0; q < Block; q += 4)
                    {
                        var p = Vector256.Create((ReadOnlySpan<double>)x.Slice(q, 4));
                        var r = Vector256.Create((ReadOnlySpan<double>)y.Slice(q, 4));
                        (p + r).CopyTo(x.Slice(q, 4));
                        (p - r).CopyTo(y.Slice(q, 4));
                    }
                }
    }

    /// <summary>y = H_n x / √n (normalised) for each row of length n — the same transform as ai.quantc.Hadamard.</summary>
    public static void Transform(ReadOnlySpan<float> x, Span<float> y, long n, bool normalize = true)
    {
        if (!TrySplit(n, out long p2, out int m)) throw new ArgumentException($"no Hadamard matrix of order {n}");
        var hm = BaseMatrix(m);
        float scale = normalize ? 1f / MathF.Sqrt(n) : 1f;
        var tmp = new float[n];
        for (long r = 0; r < x.Length / n; r++)
        {
            var row = y.Slice((int)(r * n), (int)n);
            x.Slice((int)(r * n), (int)n).CopyTo(row);
            for (int a = 0; a < m; a++) Fwht(row.Slice((int)(a * p2), (int)p2));
            if (m > 1)
            {
                Array.Clear(tmp);
                for (int a = 0; a < m; a++)
                    for (int c = 0; c < m; c++)
                    {
                        var src = row.Slice((int)(c * p2), (int)p2);
                        var dst = tmp.AsSpan((int)(a * p2), (int)p2);
                        if (hm[a * m + c] > 0) System.Numerics.Tensors.TensorPrimitives.Add(dst, src, dst);
                        else System.Numerics.Tensors.TensorPrimitives.Subtract(dst, src, dst);
                    }
                tmp.CopyTo(row);
            }
            if (normalize) System.Numerics.Tensors.TensorPrimitives.Multiply(row, scale, row);
        }
    }

    /// <summary>In-place unnormalised Walsh–Hadamard butterflies over a power-of-two length (Sylvester order), in float or
    /// double.</summary>
    internal static void Fwht<T>(Span<T> v) where T : System.Numerics.IFloatingPoint<T>
    {
        for (int h = 1; h < v.Length; h <<= 1)
            for (int i = 0; i < v.Length; i += h << 1)
                for (int j = i; j < i + h; j++)
                {
                    T a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
    }

    /// <summary>GF(p) or GF(p²) (a + bα, α² = r the smallest non-residue), element index a + p·b, with the quadratic character.</summary>
    private sealed class Field
    {
        public readonly int P, Q, R;
        public readonly sbyte[] Chi;

        public Field(int p, int power)
        {
            P = p;
            Q = power == 1 ? p : p * p;
            if (power == 2)
                for (R = 2; R < p; R++)
                    if (!Enumerable.Range(1, p - 1).Any(t => t * t % p == R)) break;
            Chi = Enumerable.Repeat((sbyte)-1, Q).ToArray();
            Chi[0] = 0;
            for (int x = 1; x < Q; x++) Chi[Mul(x, x)] = 1;
        }

        public int Add(int x, int y) => Q == P ? (x + y) % P : (x % P + y % P) % P + P * ((x / P + y / P) % P);
        public int Neg(int x) => Q == P ? (P - x) % P : (P - x % P) % P + P * ((P - x / P) % P);
        public int Mul(int x, int y)
        {
            if (Q == P) return x * y % P;
            int a = x % P, b = x / P, c = y % P, d = y / P;
            return (a * c + R * b % P * d) % P + P * ((a * d + b * c) % P);
        }
    }

    /// <summary>Paley I (q ≡ 3 mod 4): H = I + [[0, 1ᵀ], [−1, Q]], Q[i][j] = χ(j − i); order q + 1.</summary>
    private static sbyte[] Paley1(int q)
    {
        var f = new Field(q, 1);
        int n = q + 1;
        var h = new sbyte[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                int s = (i, j) switch
                {
                    (0, 0) => 0,
                    (0, _) => 1,
                    (_, 0) => -1,
                    _ => f.Chi[f.Add(j - 1, f.Neg(i - 1))],
                };
                h[i * n + j] = (sbyte)(s + (i == j ? 1 : 0));
            }
        return h;
    }

    /// <summary>Paley II (q ≡ 1 mod 4): C = [[0, 1ᵀ], [1, Q]]; H = C ⊗ [[1,1],[1,−1]] + I ⊗ [[1,−1],[−1,−1]]; order 2(q + 1).</summary>
    private static sbyte[] Paley2(int p, int power)
    {
        var f = new Field(p, power);
        int c = f.Q + 1, n = 2 * c;
        int[,] a = { { 1, 1 }, { 1, -1 } }, b = { { 1, -1 }, { -1, -1 } };
        var h = new sbyte[n * n];
        for (int i = 0; i < c; i++)
            for (int j = 0; j < c; j++)
            {
                int conf = (i == 0 && j == 0) ? 0 : (i == 0 || j == 0) ? 1 : f.Chi[f.Add(j - 1, f.Neg(i - 1))];
                for (int u = 0; u < 2; u++)
                    for (int v = 0; v < 2; v++)
                        h[(2 * i + u) * n + 2 * j + v] = (sbyte)(conf * a[u, v] + (i == j ? b[u, v] : 0));
            }
        return h;
    }

    /// <summary>
    /// First rows a, b, c, d (±1 as '+'/'-') of four circulants of odd order w = m/4 with
    /// Σ PAF = 0 at every nonzero shift, for the orders built by <see cref="GoethalsSeidel"/>;
    /// null for the others. Found by our own tabu search:
    /// <c>dotnet run -c Release --project tools/Quantc.Tools.HadamardSearch -- search W --seed S</c>
    /// (the command per order is noted below); <c>-- verify</c> re-checks them.
    /// custom-ops/cpu/hadamard.cpp holds the same strings.
    /// </summary>
    public static IReadOnlyList<string>? GoethalsSeidelSequences(int m) => m switch
    {
        // search 39 --seed 1
        156 => [GS39A, GS39B, GS39C, GS39D],
        // search 43 --seed 1
        172 => [GS43A, GS43B, GS43C, GS43D],
        _ => null,
    };

    /// <summary>
    /// Goethals–Seidel array over circulants A, B, C, D (first rows given) and the back-identity R:
    /// [[A, BR, CR, DR], [−BR, A, DᵀR, −CᵀR], [−CR, −DᵀR, A, BᵀR], [−DR, CᵀR, −BᵀR, A]]; order 4w.
    /// </summary>
    private static sbyte[] GoethalsSeidel(IReadOnlyList<string> rows)
    {
        int w = rows[0].Length, n = 4 * w;
        // Block (bi, bj): which circulant, transposed or not, times R or not, and its sign.
        (int Seq, bool T, bool R, int Sign)[,] blocks =
        {
            { (0, false, false, 1), (1, false, true, 1), (2, false, true, 1), (3, false, true, 1) },
            { (1, false, true, -1), (0, false, false, 1), (3, true, true, 1), (2, true, true, -1) },
            { (2, false, true, -1), (3, true, true, -1), (0, false, false, 1), (1, true, true, 1) },
            { (3, false, true, -1), (2, true, true, 1), (1, true, true, -1), (0, false, false, 1) },
        };
        var h = new sbyte[n * n];
        for (int bi = 0; bi < 4; bi++)
            for (int bj = 0; bj < 4; bj++)
            {
                var (seq, t, r, sign) = blocks[bi, bj];
                for (int i = 0; i < w; i++)
                    for (int j = 0; j < w; j++)
                    {
                        int col = r ? w - 1 - j : j;             // (X·R)[i][j] = X[i][w−1−j]
                        int shift = t ? i - col : col - i;        // circulant X[i][c] = x[(c − i) mod w]; Xᵀ[i][c] = x[(i − c) mod w]
                        int v = rows[seq][((shift % w) + w) % w] == '+' ? 1 : -1;
                        h[(bi * w + i) * n + bj * w + j] = (sbyte)(sign * v);
                    }
            }
        return h;
    }

    private static sbyte[] Doubled(sbyte[] h, int m)
    {
        int n = 2 * m;
        var d = new sbyte[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                d[i * n + j] = (sbyte)(h[i % m * m + j % m] * (i >= m && j >= m ? -1 : 1));
        return d;
    }

    // `search 39 --seed 1` (21,793 tabu steps, 1 s on the 2-core VM); row sums −3, −7, −7, −7 (9 + 3·49 = 156).
    private const string GS39A = "-+-----++-+-++++-++---+-+++++-----+-+--";
    private const string GS39B = "-----+-+---+---++-+--+--++-+-+--+++-+-+";
    private const string GS39C = "++-++-+------++-+--+++--+--++----+----+";
    private const string GS39D = "---++--+---++--+----+-----+++-++-+-+++-";

    // `search 43 --seed 1` (10,959,308 tabu steps, 221 restarts, 321 s on the 2-core VM); row sums 1, −7, 11, 1 (1 + 49 + 121 + 1 = 172).
    private const string GS43A = "++-+-+-+---++----+++++--+-+++---++--+++-+--";
    private const string GS43B = "++------++-++++-+--+--++---+-+-++-----+---+";
    private const string GS43C = "++-++++++-+-+--+--+++++++--+--+-++--++--+++";
    private const string GS43D = "++-+-+-+-++++----+--+----+---++-++-+++++-+-";
}
