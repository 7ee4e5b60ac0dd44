using System.Numerics;

namespace Quantc.Core.Numerics;

/// <summary>
/// What GPTQ needs of one layer input's Hessian H = 2·XᵀX (K×K, float64): U, the upper Cholesky factor of (H + damping)⁻¹, and the
/// inputs never active in calibration (dead: zero diagonal). Layers reading the same input (q/k/v, gate/up) share one factor.
/// <see cref="Of"/> works in the Hessian's own array (with K = 5632, a 1b LLaMA's down_proj, 254 MB; a copy per step would be
/// six) and strips of 32 columns. The arithmetic is that of the textbook loops, operation for operation (each sum in the same
/// order), only blocked into register tiles that read rows: the results are bit-identical. K = 5632 on a 2-core AVX2 host:
/// 152 s with row-by-row loops, 22 s with the tiles (bench/RESULTS.md).
/// </summary>
public sealed class GptqFactor
{
    private GptqFactor(int k, double[] upper, bool[] dead)
    {
        K = k;
        Upper = upper;
        Dead = dead;
    }

    /// <summary>The input's width.</summary>
    public int K { get; }

    /// <summary>U, K×K row-major: upper triangle (diagonal included) of the upper Cholesky factor of H⁻¹; the rest is zero.</summary>
    public double[] Upper { get; }

    /// <summary>Inputs with a zero Hessian diagonal: GPTQ zeroes their weights.</summary>
    public bool[] Dead { get; }

    /// <summary>
    /// The factor of <paramref name="hessian"/> (K×K row-major), made in that array, which becomes <see cref="Upper"/>: dead inputs
    /// get diagonal 1, all of the diagonal gets <paramref name="damp"/>·mean(diag H) added (1 when the mean is 0), then H = L·Lᵀ,
    /// H⁻¹ = L⁻ᵀ·L⁻¹ and U = the transposed Cholesky factor of H⁻¹. Only the Hessian's lower triangle (diagonal included) is read,
    /// and no other K×K array is made: the steps keep what they still need in the triangle the others do not use.
    /// </summary>
    public static GptqFactor Of(double[] hessian, int k, double damp)
    {
        if (hessian.Length != (long)k * k) throw new ArgumentException($"the Hessian must be {k}×{k}");
        var h = hessian;
        var dead = new bool[k];
        double meanDiag = 0;
        for (int i = 0; i < k; i++) meanDiag += h[i * k + i];
        meanDiag /= k;
        for (int i = 0; i < k; i++)
            if (h[i * k + i] == 0)
            {
                h[i * k + i] = 1;
                dead[i] = true;
            }
        for (int i = 0; i < k; i++) h[i * k + i] += damp * (meanDiag == 0 ? 1 : meanDiag);

        CholeskyInPlace(h, k);                       // lower triangle: L; strict upper: Lᵀ
        var diagonal = new double[k];
        for (int i = 0; i < k; i++) diagonal[i] = h[i * k + i];
        InvertLower(h, diagonal, k);                 // strict upper: (L⁻¹)ᵀ, diagonal: L⁻¹'s (L read from the strict lower triangle)
        LowerOfGram(h, diagonal, k);                 // strict lower: H⁻¹, its diagonal in `diagonal`
        for (int i = 0; i < k; i++) h[i * k + i] = diagonal[i];
        CholeskyInPlace(h, k);                       // lower triangle: Lc, H⁻¹ = Lc·Lcᵀ; strict upper: Lcᵀ
        for (int i = 0; i < k; i++) Array.Clear(h, i * k, i);      // U = Lcᵀ: the upper triangle, zeros below
        return new GptqFactor(k, h, dead);
    }

    private const int R = DoubleStrips.TileRows, C = DoubleStrips.TileColumns;

    /// <summary>Column tiles that a row panel goes through while its rows are in cache: its rows of the matrix are read from memory
    /// once per group of 32 columns instead of once per tile.</summary>
    internal const int Group = 4;

    /// <summary>Row panels of a column tile handed to one thread at a time (16 rows: the transposed writes of two threads never
    /// share a cache line).</summary>
    private const int PanelsPerTask = 4;

    // The three steps below go by column tiles of 8 and row panels of 4. A row's sums over t run in a register tile of 4 × 8 sums
    // (DoubleStrips.Tile: each element gets its terms one at a time in ascending t, as the textbook loop, so the results are
    // bit-identical). The matrix's rows are K apart, a multiple of 4 KiB for the usual widths (2048, 5632, …), so a column of it
    // walked over t would fall into one cache set: the columns a tile reads over t are first copied into a contiguous strip of
    // 8 per t (from 8 rows, read along their length), and the rows of the 4 sums are read along their length.

    /// <summary>
    /// Cholesky of the lower triangle of <paramref name="a"/> into that triangle: l[i,j] = (a[i,j] − Σ_{t&lt;j} l[i,t]·l[j,t]) / l[j,j],
    /// the terms subtracted one at a time in ascending t; the strict upper triangle gets lᵀ (a[j,i] = l[i,j]). By groups of
    /// <see cref="Group"/> column tiles of 8, left to right: the group's own rows as the textbook loop; then each tile's rows of L,
    /// t &lt; the tile's first column, are copied into a strip, and every row below the group, 4 rows at a time on the thread pool,
    /// takes, tile after tile, those terms as one register tile and then the tile's own columns in order.
    /// </summary>
    private static void CholeskyInPlace(double[] a, int k)
    {
        var strips = new double[Group][];
        for (int g0 = 0; g0 < k; g0 += Group * C)
        {
            int g1 = Math.Min(k, g0 + Group * C);
            for (int i = g0; i < g1; i++)
                for (int j = g0; j <= i; j++)
                {
                    double s = a[i * k + j];
                    for (int t = 0; t < j; t++) s -= a[i * k + t] * a[j * k + t];
                    if (i > j)
                    {
                        double l = s / a[j * k + j];
                        a[i * k + j] = l;
                        a[j * k + i] = l;
                    }
                    else if (s <= 0) throw new InvalidOperationException("the Hessian is not positive definite (increase damping)");
                    else a[i * k + i] = Math.Sqrt(s);
                }
            int panels = (k - g1 + R - 1) / R;
            if (panels == 0) continue;
            for (int q = 0; q < Group; q++)                                  // strip q: [t, c] = l[j0 + c, t], t < j0
            {
                int j0 = g0 + q * C;
                var strip = strips[q] ??= new double[(long)k * C];
                for (int c = 0; c < C; c++)
                    for (int t = 0; t < j0; t++) strip[t * C + c] = a[(j0 + c) * k + t];
            }
            int first = g0, below = g1;
            Parallel.For(0, (panels + PanelsPerTask - 1) / PanelsPerTask, () => new double[R * C], (task, _, acc) =>
            {
                for (int p = task * PanelsPerTask; p < Math.Min(panels, (task + 1) * PanelsPerTask); p++)
                    for (int q = 0; q < Group; q++)
                        CholeskyRows(a, strips[q], k, first + q * C, below + p * R, Math.Min(R, k - below - p * R), acc);
                return acc;
            }, _ => { });
        }
    }

    /// <summary>Rows [i0, i0 + rows) of the column tile [j0, j0 + 8), below the tile: the terms t &lt; j0 as a register tile, then the
    /// tile's columns one by one, each column's entries finished before they join the later columns' sums.</summary>
    private static void CholeskyRows(double[] a, double[] strip, int k, int j0, int i0, int rows, double[] acc)
    {
        for (int r = 0; r < rows; r++) Array.Copy(a, (long)(i0 + r) * k + j0, acc, r * C, C);
        DoubleStrips.Tile<DoubleStrips.Sub>(acc, rows, a, (long)i0 * k, k, strip, 0, C, 0, j0);    // l[i,t]·l[j,t], t < j0
        for (int c = 0; c < C; c++)
        {
            int j = j0 + c;
            double d = a[j * k + j];
            for (int r = 0; r < rows; r++)
            {
                double l = acc[r * C + c] / d;
                a[(i0 + r) * k + j] = l;
                a[j * k + i0 + r] = l;
                for (int c2 = c + 1; c2 < C; c2++) acc[r * C + c2] -= l * a[(j0 + c2) * k + j];
            }
        }
    }

    /// <summary>
    /// L⁻¹ of the strict lower triangle of <paramref name="a"/> and <paramref name="diagonal"/> (L's diagonal): inv[i,i] = 1/l[i,i],
    /// inv[i,j] = −(Σ_{t=j}^{i−1} l[i,t]·inv[t,j]) / l[i,i], the terms added one at a time in ascending t, written transposed into the
    /// strict upper triangle (a[j,i] = inv[i,j]) and, on the diagonal, into a's diagonal; L's strict lower triangle is only read.
    /// Columns never meet: groups of <see cref="Group"/> column tiles of 8 run in parallel, each tile a forward substitution down
    /// its rows with its own results kept in a strip (inv[t, tile] for every t) that its register tiles read; a panel of 4 rows
    /// goes through the group's tiles one after the other.
    /// </summary>
    private static void InvertLower(double[] a, double[] diagonal, int k)
    {
        int groups = (k + Group * C - 1) / (Group * C);
        Parallel.For(0, groups, () => (new double[Group * (long)k * C], new double[R * C]), (group, _, buffers) =>
        {
            var (strips, acc) = buffers;             // strips[q·K·8 + (t − j0)·8 + c] = inv[t, j0 + c], j0 = g0 + 8q
            int g0 = group * Group * C, g1 = Math.Min(k, g0 + Group * C);
            for (int j0 = g0; j0 < g1; j0 += C)                               // the group's own rows, as the textbook loop
            {
                long strip = (long)(j0 - g0) / C * k * C;
                int width = Math.Min(C, k - j0);
                for (int i = j0; i < g1; i++)
                {
                    double d = diagonal[i];
                    for (int j = j0; j < Math.Min(i, j0 + width); j++)
                    {
                        double s = 0;
                        for (int t = j; t < i; t++) s += a[i * k + t] * strips[strip + (t - j0) * C + j - j0];
                        strips[strip + (i - j0) * C + j - j0] = -s / d;
                    }
                    for (int c = i - j0; c < C; c++) strips[strip + (i - j0) * C + c] = c == i - j0 ? 1 / d : 0;
                }
            }
            for (int i0 = g1; i0 < k; i0 += R)
            {
                int rows = Math.Min(R, k - i0);
                for (int j0 = g0; j0 < g1; j0 += C)
                {
                    long strip = (long)(j0 - g0) / C * k * C;
                    for (int r = 0; r < rows; r++)                            // the tile's own rows of t: t ≥ j only
                        for (int c = 0; c < C; c++)
                        {
                            double s = 0;
                            for (int t = j0 + c; t < j0 + C; t++) s += a[(i0 + r) * k + t] * strips[strip + (t - j0) * C + c];
                            acc[r * C + c] = s;
                        }
                    DoubleStrips.Tile<DoubleStrips.Add>(acc, rows, a, (long)i0 * k, k, strips, strip - (long)j0 * C, C, j0 + C, i0);
                    for (int r = 0; r < rows; r++)                            // the 4 rows' own terms, each row finished in turn
                    {
                        int i = i0 + r;
                        for (int c = 0; c < C; c++)
                        {
                            double s = acc[r * C + c];
                            for (int t = i0; t < i; t++) s += a[i * k + t] * strips[strip + (t - j0) * C + c];
                            strips[strip + (i - j0) * C + c] = -s / diagonal[i];
                        }
                    }
                }
            }
            for (int j = g0; j < g1; j++)
            {
                long strip = (long)(j - g0) / C * k * C;
                int c = (j - g0) % C, j0 = j - c;
                for (int i = j; i < k; i++) a[j * k + i] = strips[strip + (i - j0) * C + c];
            }
            return buffers;
        }, _ => { });
    }

    /// <summary>(Lᵀ·L)[i,j] = Σ_{t=i}^{K−1} l[t,i]·l[t,j], j ≤ i, for the lower triangular L held transposed in <paramref name="a"/>'s
    /// upper triangle (l[t,i] = a[i,t], the diagonal included), the terms added one at a time in ascending t, into the strict lower
    /// triangle (a[i,j]) and, for j = i, into <paramref name="diagonal"/>: the upper triangle is only read. By column tiles of 8:
    /// the tile's 8 rows of Lᵀ copied into a strip, then every row i ≥ the tile's first column, 4 at a time on the thread pool, as
    /// a register tile over t (its rows of Lᵀ read along their length).</summary>
    private static void LowerOfGram(double[] a, double[] diagonal, int k)
    {
        var strips = new double[Group * (long)k * C];    // strips[q·K·8 + (t − j0)·8 + c] = l[t, j0 + c] = a[j0 + c, t], t ≥ j0 + c
        for (int g0 = 0; g0 < k; g0 += Group * C)
        {
            int g1 = Math.Min(k, g0 + Group * C);
            Array.Clear(strips);
            for (int j = g0; j < g1; j++)
            {
                long strip = (long)(j - g0) / C * k * C;
                int c = (j - g0) % C, j0 = j - c;
                for (int t = j; t < k; t++) strips[strip + (t - j0) * C + c] = a[j * k + t];
            }
            int panels = (k - g0 + R - 1) / R, first = g0;
            Parallel.For(0, (panels + PanelsPerTask - 1) / PanelsPerTask, () => new double[R * C], (task, _, acc) =>
            {
                for (int p = task * PanelsPerTask; p < Math.Min(panels, (task + 1) * PanelsPerTask); p++)
                {
                    int i0 = first + p * R, rows = Math.Min(R, k - i0);
                    for (int j0 = first; j0 < Math.Min(g1, i0 + rows); j0 += C)
                        GramRows(a, strips, (long)(j0 - first) / C * k * C, diagonal, k, j0, i0, rows, acc);
                }
                return acc;
            }, _ => { });
        }
    }

    /// <summary>Rows [i0, i0 + rows) of the Gram matrix in the column tile [j0, j0 + 8): row i's terms start at t = i.</summary>
    private static void GramRows(double[] a, double[] strips, long strip, double[] diagonal, int k, int j0, int i0, int rows,
        double[] acc)
    {
        Array.Clear(acc);
        for (int t = i0; t < i0 + rows - 1; t++)
            for (int r = 0; r <= t - i0; r++)
                for (int c = 0; c < C; c++) acc[r * C + c] += a[(i0 + r) * k + t] * strips[strip + (t - j0) * C + c];
        DoubleStrips.Tile<DoubleStrips.Add>(acc, rows, a, (long)i0 * k, k, strips, strip - (long)j0 * C, C, i0 + rows - 1, k);
        for (int r = 0; r < rows; r++)
        {
            int i = i0 + r;
            for (int j = j0; j <= Math.Min(i, Math.Min(k, j0 + C) - 1); j++)
                if (j == i) diagonal[i] = acc[r * C + j - j0];
                else a[i * k + j] = acc[r * C + j - j0];
        }
    }

    /// <summary>acc[j] += a·x[j] (the product rounded, then the sum: no fused multiply-add). With −a it is acc[j] −= a·x[j] bit for bit
    /// (IEEE 754: x − y is x + (−y), and (−a)·x is −(a·x)).</summary>
    internal static void Add(Span<double> acc, double a, ReadOnlySpan<double> x)
    {
        int j = 0;
        if (Vector.IsHardwareAccelerated && acc.Length >= Vector<double>.Count)
        {
            var va = new Vector<double>(a);
            for (; j <= acc.Length - Vector<double>.Count; j += Vector<double>.Count)
            {
                var product = va * new Vector<double>(x[j..]);
                (new Vector<double>(acc[j..]) + product).CopyTo(acc[j..]);
            }
        }
        for (; j < acc.Length; j++) acc[j] += a * x[j];
    }
}
