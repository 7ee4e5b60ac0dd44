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
    /// The factor of <paramref name="hessian"/> (K×K row-major), which it overwrites: dead inputs get diagonal 1, all of the diagonal
    /// gets <paramref name="damp"/>·mean(diag H) added (1 when the mean is 0), then H = L·Lᵀ, H⁻¹ = L⁻ᵀ·L⁻¹ and U = the transposed
    /// Cholesky factor of H⁻¹.
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

        CholeskyInPlace(h, k);                       // h's lower triangle: L
        var b = new double[(long)k * k];
        InvertLower(h, b, k);                        // b's lower triangle: L⁻¹
        LowerOfGram(b, h, k);                        // h's lower triangle: H⁻¹ = L⁻ᵀ·L⁻¹
        CholeskyInPlace(h, k);                       // h's lower triangle: Lc, H⁻¹ = Lc·Lcᵀ
        Array.Clear(b);
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++) b[j * k + i] = h[i * k + j];
        return new GptqFactor(k, b, dead);
    }

    /// <summary>
    /// Cholesky of the lower triangle of <paramref name="a"/> into that triangle: l[i,j] = (a[i,j] − Σ_{t&lt;j} l[i,t]·l[j,t]) / l[j,j],
    /// the sum in ascending t. Row by row, as the textbook loop; the strict upper triangle holds lᵀ as it is made (a copy, so that the
    /// updates of one row read contiguous memory) and is overwritten.
    /// </summary>
    private static void CholeskyInPlace(double[] a, int k)
    {
        for (int i = 0; i < k; i++)
        {
            var row = a.AsSpan(i * k, i + 1);
            // row[j] becomes a[i,j] − Σ_{t<j} l[i,t]·l[j,t], t ascending: for each t, once l[i,t] is final, it is taken from every
            // later entry of the row (l[j,t] for j > t is lᵀ[t,j], row t of the upper triangle).
            for (int t = 0; t < i; t++)
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

    /// <summary>
    /// <paramref name="inv"/>'s lower triangle := L⁻¹ for L the lower triangle of <paramref name="l"/>: inv[i,i] = 1/l[i,i],
    /// inv[i,j] = −(Σ_{t=j}^{i−1} l[i,t]·inv[t,j]) / l[i,i], the sum in ascending t (from 0). <paramref name="inv"/> starts zero.
    /// </summary>
    private static void InvertLower(double[] l, double[] inv, int k)
    {
        for (int i = 0; i < k; i++)
        {
            var acc = inv.AsSpan(i * k, i);
            // acc[j] gathers l[i,t]·inv[t,j] for t = j..i−1 in ascending t: at step t it is added to every j ≤ t.
            for (int t = 0; t < i; t++) Add(acc[..(t + 1)], l[i * k + t], inv.AsSpan(t * k, t + 1));
            double d = l[i * k + i];
            for (int j = 0; j < i; j++) acc[j] = -acc[j] / d;
            inv[i * k + i] = 1 / d;
        }
    }

    /// <summary><paramref name="g"/>'s lower triangle := (Lᵀ·L)[i,j] = Σ_{t=i}^{K−1} l[t,i]·l[t,j] for the lower triangular L in
    /// <paramref name="l"/>, the sum in ascending t (from 0).</summary>
    private static void LowerOfGram(double[] l, double[] g, int k)
    {
        for (int i = 0; i < k; i++)
        {
            var acc = g.AsSpan(i * k, i + 1);
            acc.Clear();
            for (int t = i; t < k; t++) Add(acc, l[t * k + i], l.AsSpan(t * k, i + 1));
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
