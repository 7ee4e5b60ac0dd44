using System.Numerics;

namespace Quantc.Core.Numerics;

/// <summary>
/// What GPTQ needs of one layer input's Hessian H = 2·XᵀX (K×K, float64): U, the upper Cholesky factor of (H + damping)⁻¹, and the
/// inputs never active in calibration (dead: zero diagonal). Layers reading the same input (q/k/v, gate/up) share one factor.
/// <see cref="Of"/> works in the Hessian's own array and one more K×K array: with K = 5632 (a 1b LLaMA's down_proj) that is
/// 2 × 254 MB, where a copy per step would be six. The arithmetic is that of the textbook loops, operation for operation (each
/// sum in the same order), only with the loops ordered so that the inner one reads a row: the results are bit-identical.
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
        InvertLower(h, diagonal, k);                 // lower triangle: L⁻¹ (L still read from the upper copy and the diagonal)
        LowerOfGram(h, diagonal, k);                 // strict upper: H⁻¹ transposed, its diagonal in `diagonal`
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < i; j++) h[i * k + j] = h[j * k + i];
            h[i * k + i] = diagonal[i];
        }
        CholeskyInPlace(h, k);                       // lower triangle: Lc, H⁻¹ = Lc·Lcᵀ
        for (int i = 0; i < k; i++)                  // U = Lcᵀ: the upper triangle, zeros below
            for (int j = 0; j < i; j++)
            {
                h[j * k + i] = h[i * k + j];
                h[i * k + j] = 0;
            }
        return new GptqFactor(k, h, dead);
    }

    /// <summary>Rows per panel of the blocked Cholesky, columns per block of <see cref="InvertLower"/>.</summary>
    internal const int Panel = 128;

    private const int W = DoubleStrips.Width;

    /// <summary>
    /// Cholesky of the lower triangle of <paramref name="a"/> into that triangle: l[i,j] = (a[i,j] − Σ_{t&lt;j} l[i,t]·l[j,t]) / l[j,j],
    /// the sum in ascending t; the strict upper triangle holds lᵀ as it is made (a copy, so that the updates of one row read
    /// contiguous memory) and is overwritten. Blocked by panels of rows [i0, i1) so that the rows of a panel run in parallel, each
    /// element still getting the same operations in the same order as in the row-by-row textbook loop (bit-identical):
    /// (1) every panel row makes its entries left of the panel, l[i,t] for t &lt; i0 (they need only the finished rows above);
    /// (2) every panel row takes those columns' terms, t &lt; i0 ascending, from its entries inside the panel (they need the
    /// other panel rows' step 1); (3) the panel's own triangle, row by row as the textbook loop, t from i0.
    /// </summary>
    private static void CholeskyInPlace(double[] a, int k)
    {
        for (int i0 = 0; i0 < k; i0 += Panel)
        {
            int p0 = i0, i1 = Math.Min(k, i0 + Panel);
            if (p0 > 0)
            {
                Parallel.For(0, (i1 - p0 + 7) / 8, g =>
                {
                    int r0 = p0 + 8 * g, r1 = Math.Min(i1, r0 + 8);
                    for (int t = 0; t < p0; t++)                 // step 1: l[i,t], t < i0, for rows r0..r1 together
                    {
                        double d = a[t * k + t];
                        var upper = a.AsSpan(t * k + t + 1, p0 - t - 1);
                        for (int i = r0; i < r1; i++)
                        {
                            double lit = a[i * k + t] / d;
                            a[i * k + t] = lit;
                            a[t * k + i] = lit;
                            Add(a.AsSpan(i * k + t + 1, p0 - t - 1), -lit, upper);
                        }
                    }
                });
                Parallel.For(p0, i1, i =>                      // step 2: the terms t < i0 of the entries i0..i
                {
                    var inside = a.AsSpan(i * k + p0, i - p0 + 1);
                    for (int t = 0; t < p0; t++) Add(inside, -a[i * k + t], a.AsSpan(t * k + p0, i - p0 + 1));
                });
            }
            for (int i = p0; i < i1; i++)                       // step 3: the panel's triangle
            {
                var row = a.AsSpan(i * k, i + 1);
                for (int t = p0; t < i; t++)
                {
                    double lit = row[t] / a[t * k + t];
                    row[t] = lit;
                    a[t * k + i] = lit;                  // lᵀ[t,i], read by this row's own diagonal below
                    Add(row[(t + 1)..], -lit, a.AsSpan(t * k + t + 1, i - t));
                }
                double s = row[i];
                if (s <= 0) throw new InvalidOperationException("the Hessian is not positive definite (increase damping)");
                row[i] = Math.Sqrt(s);
            }
        }
    }

    /// <summary>
    /// L⁻¹ into <paramref name="a"/>'s lower triangle, over L: inv[i,i] = 1/l[i,i], inv[i,j] = −(Σ_{t=j}^{i−1} l[i,t]·inv[t,j]) / l[i,i],
    /// the sum in ascending t. L is read from the strict upper triangle, where the Cholesky left Lᵀ (l[i,t] = a[t,i]), and from
    /// <paramref name="diagonal"/>. Columns never meet, so blocks of <see cref="Panel"/> columns run in parallel; a row's sums go by
    /// strips held in registers: the terms t &lt; the strip's end one element at a time (only t ≥ j), the rest by the strip.
    /// </summary>
    private static void InvertLower(double[] a, double[] diagonal, int k)
    {
        Parallel.For(0, (k + Panel - 1) / Panel, () => new double[k], (b, _, row) =>
        {
            int j0 = b * Panel, j1 = Math.Min(k, j0 + Panel);
            Span<double> acc = stackalloc double[W];
            for (int i = j0; i < k; i++)
            {
                for (int t = j0; t < i; t++) row[t] = a[t * k + i];          // l[i,t], t in [j0, i)
                double d = diagonal[i];
                int width = Math.Min(i, j1);
                for (int jc = j0; jc < width; jc += W)
                {
                    var sums = acc[..Math.Min(W, width - jc)];
                    sums.Clear();
                    int edge = Math.Min(jc + W, i);
                    for (int t = jc; t < edge; t++)                             // terms inside the strip: inv[t,j] for j ≤ t
                    {
                        double c = row[t];
                        for (int j = jc; j <= Math.Min(t, jc + sums.Length - 1); j++) sums[j - jc] += c * a[t * k + j];
                    }
                    DoubleStrips.Range<DoubleStrips.Add>(sums, row, edge, i, a, jc, k);
                    var target = a.AsSpan(i * k + jc, sums.Length);
                    for (int j = 0; j < sums.Length; j++) target[j] = -sums[j] / d;
                }
                if (i < j1) a[i * k + i] = 1 / d;
            }
            return row;
        }, _ => { });
    }

    /// <summary>(Lᵀ·L)[i,j] = Σ_{t=i}^{K−1} l[t,i]·l[t,j], j ≤ i, for the lower triangular L in <paramref name="a"/> (the inverse, its
    /// diagonal included), the sum in ascending t, written transposed into the strict upper triangle (a[j,i]) and, for j = i, into
    /// <paramref name="diagonal"/>: L is not overwritten while it is read. Rows are independent: panels of rows run in parallel,
    /// each row of L read once per panel.</summary>
    private static void LowerOfGram(double[] a, double[] diagonal, int k)
    {
        const int rows = 16;
        Parallel.For(0, (k + rows - 1) / rows, () => new double[rows * k], (b, _, g) =>
        {
            int i0 = b * rows, i1 = Math.Min(k, i0 + rows);
            Array.Clear(g);
            for (int t = i0; t < k; t++)
                for (int i = i0; i < Math.Min(i1, t + 1); i++)
                    Add(g.AsSpan((i - i0) * k, i + 1), a[t * k + i], a.AsSpan(t * k, i + 1));
            for (int i = i0; i < i1; i++)
            {
                for (int j = 0; j < i; j++) a[j * k + i] = g[(i - i0) * k + j];
                diagonal[i] = g[(i - i0) * k + i];
            }
            return g;
        }, _ => { });
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
