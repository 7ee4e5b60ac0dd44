namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// The non-linear operations of a LLaMA block with hand-written backward passes, for block-wise reconstruction: RMSNorm, RoPE in
/// the rotate-half layout, causal attention with grouped key/value heads, SwiGLU. Matrices are row-major [rows, columns], one row
/// per token of one sequence; every backward is checked against finite differences in the tests.
/// </summary>
public static class BlockOps
{
    /// <summary>y = x / √(mean(x²) + ε) · γ per row; <paramref name="inv"/>[t] receives 1/√(mean(x²) + ε).</summary>
    public static void RmsNorm(float[] x, float[] gamma, float[] y, float[] inv, int t, int d, float eps)
    {
        for (int r = 0; r < t; r++)
        {
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
            float s = (float)(1 / Math.Sqrt(ss / d + eps));
            inv[r] = s;
            for (int i = 0; i < d; i++) y[r * d + i] = x[r * d + i] * s * gamma[i];
        }
    }

    /// <summary>dx (+)= ∂/∂x of RMSNorm given dy: s·(γ⊙dy) − x·s³·mean(γ⊙dy⊙x).</summary>
    public static void RmsNormBackward(float[] x, float[] gamma, float[] inv, float[] dy, float[] dx, int t, int d, bool accumulate)
    {
        for (int r = 0; r < t; r++)
        {
            double dot = 0;
            for (int i = 0; i < d; i++) dot += (double)gamma[i] * dy[r * d + i] * x[r * d + i];
            float s = inv[r], c = (float)(dot / d) * s * s * s;
            for (int i = 0; i < d; i++)
            {
                float v = s * gamma[i] * dy[r * d + i] - x[r * d + i] * c;
                dx[r * d + i] = accumulate ? dx[r * d + i] + v : v;
            }
        }
    }

    /// <summary>cos/sin tables [t, dh/2] of positions 0..t−1 with frequencies θ^(−2i/dh).</summary>
    public static (float[] Cos, float[] Sin) RopeTables(int t, int dh, float theta)
    {
        int half = dh / 2;
        var cos = new float[t * half];
        var sin = new float[t * half];
        for (int p = 0; p < t; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = p * Math.Pow(theta, -2.0 * i / dh);
                cos[p * half + i] = (float)Math.Cos(angle);
                sin[p * half + i] = (float)Math.Sin(angle);
            }
        return (cos, sin);
    }

    /// <summary>RoPE in place on x [t, heads·dh], rotate-half layout: (x₁, x₂) → (x₁c − x₂s, x₂c + x₁s). With
    /// <paramref name="inverse"/> the rotation by the opposite angle, which is also the backward of the forward rotation.</summary>
    public static void Rope(float[] x, int t, int heads, int dh, float[] cos, float[] sin, bool inverse)
    {
        int half = dh / 2, w = heads * dh;
        float sign = inverse ? -1 : 1;
        for (int p = 0; p < t; p++)
            for (int h = 0; h < heads; h++)
            {
                int b = p * w + h * dh;
                for (int i = 0; i < half; i++)
                {
                    float c = cos[p * half + i], s = sign * sin[p * half + i];
                    float x1 = x[b + i], x2 = x[b + half + i];
                    x[b + i] = x1 * c - x2 * s;
                    x[b + half + i] = x2 * c + x1 * s;
                }
            }
    }

    /// <summary>Causal attention: ctx [t, H·dh] from q [t, H·dh] and k, v [t, Hk·dh], query head h reading key/value head
    /// h / (H / Hk); probs [H, t, t] receives the softmax (zero above the diagonal).</summary>
    public static void Attention(float[] q, float[] k, float[] v, float[] ctx, float[] probs, int t, int heads, int kvHeads, int dh)
    {
        int per = heads / kvHeads, wq = heads * dh, wk = kvHeads * dh;
        float scale = 1 / MathF.Sqrt(dh);
        Array.Clear(ctx, 0, t * wq);
        // Heads are independent (each writes its own columns of ctx and rows of probs): one per task.
        Gemm.For(heads, h =>
        {
            int kh = h / per;
            for (int i = 0; i < t; i++)
            {
                int row = (h * t + i) * t;
                float max = float.NegativeInfinity;
                for (int j = 0; j <= i; j++)
                {
                    float sc = 0;
                    for (int e = 0; e < dh; e++) sc += q[i * wq + h * dh + e] * k[j * wk + kh * dh + e];
                    sc *= scale;
                    probs[row + j] = sc;
                    if (sc > max) max = sc;
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) { float p = MathF.Exp(probs[row + j] - max); probs[row + j] = p; sum += p; }
                float invSum = (float)(1 / sum);
                for (int j = 0; j <= i; j++)
                {
                    float p = probs[row + j] *= invSum;
                    for (int e = 0; e < dh; e++) ctx[i * wq + h * dh + e] += p * v[j * wk + kh * dh + e];
                }
                for (int j = i + 1; j < t; j++) probs[row + j] = 0;
            }
        });
    }

    /// <summary>dq, dk, dv of <see cref="Attention"/> given dctx (overwritten, not accumulated).</summary>
    public static void AttentionBackward(float[] q, float[] k, float[] v, float[] probs, float[] dctx, float[] dq, float[] dk,
        float[] dv, int t, int heads, int kvHeads, int dh)
    {
        int per = heads / kvHeads, wq = heads * dh, wk = kvHeads * dh;
        float scale = 1 / MathF.Sqrt(dh);
        Array.Clear(dq, 0, t * wq);
        Array.Clear(dk, 0, t * wk);
        Array.Clear(dv, 0, t * wk);
        // One task per key/value head: its query heads in order, so dk and dv sum in the same order as on one thread.
        Gemm.For(kvHeads, kh =>
        {
            var dp = System.Buffers.ArrayPool<float>.Shared.Rent(t);
            for (int h = kh * per; h < (kh + 1) * per; h++)
            {
                for (int i = 0; i < t; i++)
                {
                    int row = (h * t + i) * t;
                    double dot = 0;
                    for (int j = 0; j <= i; j++)
                    {
                        float p = probs[row + j], g = 0;
                        for (int e = 0; e < dh; e++)
                        {
                            float dc = dctx[i * wq + h * dh + e];
                            g += dc * v[j * wk + kh * dh + e];
                            dv[j * wk + kh * dh + e] += p * dc;
                        }
                        dp[j] = g;
                        dot += (double)p * g;
                    }
                    for (int j = 0; j <= i; j++)
                    {
                        float ds = probs[row + j] * (dp[j] - (float)dot) * scale;
                        if (ds == 0) continue;
                        for (int e = 0; e < dh; e++)
                        {
                            dq[i * wq + h * dh + e] += ds * k[j * wk + kh * dh + e];
                            dk[j * wk + kh * dh + e] += ds * q[i * wq + h * dh + e];
                        }
                    }
                }
            }
            System.Buffers.ArrayPool<float>.Shared.Return(dp);
        });
    }

    /// <summary>m = silu(g) ⊙ u over the first <paramref name="count"/> values.</summary>
    public static void SwiGlu(float[] g, float[] u, float[] m, int count)
    {
        for (int i = 0; i < count; i++)
        {
            float sg = 1 / (1 + MathF.Exp(-g[i]));
            m[i] = g[i] * sg * u[i];
        }
    }

    /// <summary>dg, du of <see cref="SwiGlu"/> given dm: silu'(g) = σ(g)(1 + g(1 − σ(g))).</summary>
    public static void SwiGluBackward(float[] g, float[] u, float[] dm, float[] dg, float[] du, int count)
    {
        for (int i = 0; i < count; i++)
        {
            float sg = 1 / (1 + MathF.Exp(-g[i]));
            du[i] = dm[i] * g[i] * sg;
            dg[i] = dm[i] * u[i] * sg * (1 + g[i] * (1 - sg));
        }
    }
}
