namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>Sizes of a LLaMA block: hidden width, query and key/value heads, head width, MLP width, RMSNorm ε, RoPE θ.</summary>
public sealed record LlamaBlockShape(int Hidden, int Heads, int KvHeads, int HeadDim, int Ffn, float Epsilon, float RopeTheta)
{
    /// <summary>[N, K] of the seven linears in <see cref="LlamaBlock.Roles"/> order.</summary>
    public (int N, int K)[] LinearSizes => [
        (Heads * HeadDim, Hidden), (KvHeads * HeadDim, Hidden), (KvHeads * HeadDim, Hidden), (Hidden, Heads * HeadDim),
        (Ffn, Hidden), (Ffn, Hidden), (Hidden, Ffn)];

    /// <summary>Refuses shapes the block cannot compute.</summary>
    public void Check()
    {
        if (Hidden <= 0 || Heads <= 0 || KvHeads <= 0 || HeadDim <= 0 || Ffn <= 0) throw new ArgumentException("block sizes must be > 0");
        if (Heads % KvHeads != 0) throw new ArgumentException($"{Heads} query heads are not a multiple of {KvHeads} key/value heads");
        if (HeadDim % 2 != 0) throw new ArgumentException($"RoPE needs an even head width, not {HeadDim}");
    }
}

/// <summary>
/// One LLaMA decoder block (pre-norm): x₂ = x + o(attn(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x)))), y = x₂ + down(silu(gate(n₂(x₂)))
/// ⊙ up(n₂(x₂))), linears as y = x·Wᵀ with W [N, K], no biases. <see cref="Forward"/> keeps the activations of one sequence in a
/// <see cref="BlockTape"/> (allocated once per sequence length and reused), <see cref="Backward"/> accumulates ∂L/∂W of the seven
/// linears from ∂L/∂y, and optionally gives ∂L/∂x. RoPE's angles come from <see cref="LlamaBlockShape.RopeTheta"/>, or from the
/// model's own tables (<paramref name="rope"/>: positions 0, 1, … of a sequence read rows 0, 1, …), which also carry any scaling.
/// </summary>
public sealed class LlamaBlock(LlamaBlockShape shape, float[] norm1, float[] norm2, RopeTable? rope = null)
{
    /// <summary>The seven linears, in the order of the weight arrays.</summary>
    public static readonly string[] Roles = ["q", "k", "v", "o", "gate", "up", "down"];

    public LlamaBlockShape Shape { get; } = shape;
    private readonly Dictionary<int, BlockTape> _tapes = [];
    private readonly Dictionary<int, (float[] Cos, float[] Sin)> _rope = [];

    /// <summary>The tape for sequences of <paramref name="t"/> tokens (allocated on first use).</summary>
    public BlockTape TapeFor(int t)
    {
        if (!_tapes.TryGetValue(t, out var tape)) _tapes[t] = tape = new BlockTape(Shape, t);
        return tape;
    }

    /// <summary>Drops the tapes and RoPE tables kept per sequence length (one set per distinct length seen; they are made again on
    /// demand).</summary>
    public void ReleaseTapes()
    {
        _tapes.Clear();
        _rope.Clear();
    }

    private (float[] Cos, float[] Sin) RopeFor(int t)
    {
        if (!_rope.TryGetValue(t, out var r)) _rope[t] = r = rope?.First(t) ?? BlockOps.RopeTables(t, Shape.HeadDim, Shape.RopeTheta);
        return r;
    }

    /// <summary>y [t, D] of x [t, D] with the weights <paramref name="w"/> (seven [N, K] arrays); returns the tape.</summary>
    public BlockTape Forward(float[] x, int t, float[][] w, float[] y)
    {
        var s = Shape;
        var z = TapeFor(t);
        var (cos, sin) = RopeFor(t);
        int d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim;
        Array.Copy(x, z.X, t * d);
        BlockOps.RmsNorm(z.X, norm1, z.H1, z.Inv1, t, d, s.Epsilon);
        Gemm.Nt(z.H1, w[0], z.Q, t, d, wq);
        Gemm.Nt(z.H1, w[1], z.K, t, d, wk);
        Gemm.Nt(z.H1, w[2], z.V, t, d, wk);
        BlockOps.Rope(z.Q, t, s.Heads, s.HeadDim, cos, sin, false);
        BlockOps.Rope(z.K, t, s.KvHeads, s.HeadDim, cos, sin, false);
        BlockOps.Attention(z.Q, z.K, z.V, z.Ctx, z.Probs, t, s.Heads, s.KvHeads, s.HeadDim);
        Gemm.Nt(z.Ctx, w[3], z.X2, t, wq, d);
        for (int i = 0; i < t * d; i++) z.X2[i] += x[i];
        BlockOps.RmsNorm(z.X2, norm2, z.H2, z.Inv2, t, d, s.Epsilon);
        Gemm.Nt(z.H2, w[4], z.G, t, d, s.Ffn);
        Gemm.Nt(z.H2, w[5], z.U, t, d, s.Ffn);
        BlockOps.SwiGlu(z.G, z.U, z.M, t * s.Ffn);
        Gemm.Nt(z.M, w[6], y, t, s.Ffn, d);
        for (int i = 0; i < t * d; i++) y[i] += z.X2[i];
        return z;
    }

    /// <summary>Adds ∂L/∂W to <paramref name="dw"/> (seven [N, K] arrays) from dy [t, D] for the sequence of <paramref name="z"/>; writes
    /// ∂L/∂x into <paramref name="dx"/> when given. dy is not changed.</summary>
    public void Backward(BlockTape z, float[][] w, float[] dy, float[][] dw, float[]? dx)
    {
        var s = Shape;
        int t = z.T, d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, f = s.Ffn;
        var (cos, sin) = RopeFor(t);
        // MLP: y = x₂ + M·Wdᵀ.
        Gemm.Tn(dy, z.M, dw[6], d, t, f, accumulate: true);
        Gemm.Nn(dy, w[6], z.DM, t, d, f);
        BlockOps.SwiGluBackward(z.G, z.U, z.DM, z.DG, z.DU, t * f);
        Gemm.Tn(z.DG, z.H2, dw[4], f, t, d, accumulate: true);
        Gemm.Tn(z.DU, z.H2, dw[5], f, t, d, accumulate: true);
        Gemm.Nn(z.DG, w[4], z.DH, t, f, d);
        Gemm.Nn(z.DU, w[5], z.DH, t, f, d, accumulate: true);
        Array.Copy(dy, z.DX2, t * d);
        BlockOps.RmsNormBackward(z.X2, norm2, z.Inv2, z.DH, z.DX2, t, d, accumulate: true);
        // Attention: x₂ = x + Ctx·Woᵀ.
        Gemm.Tn(z.DX2, z.Ctx, dw[3], d, t, wq, accumulate: true);
        Gemm.Nn(z.DX2, w[3], z.DCtx, t, d, wq);
        BlockOps.AttentionBackward(z.Q, z.K, z.V, z.Probs, z.DCtx, z.DQ, z.DK, z.DV, t, s.Heads, s.KvHeads, s.HeadDim);
        BlockOps.Rope(z.DQ, t, s.Heads, s.HeadDim, cos, sin, true);
        BlockOps.Rope(z.DK, t, s.KvHeads, s.HeadDim, cos, sin, true);
        Gemm.Tn(z.DQ, z.H1, dw[0], wq, t, d, accumulate: true);
        Gemm.Tn(z.DK, z.H1, dw[1], wk, t, d, accumulate: true);
        Gemm.Tn(z.DV, z.H1, dw[2], wk, t, d, accumulate: true);
        if (dx is null) return;
        Gemm.Nn(z.DQ, w[0], z.DH, t, wq, d);
        Gemm.Nn(z.DK, w[1], z.DH, t, wk, d, accumulate: true);
        Gemm.Nn(z.DV, w[2], z.DH, t, wk, d, accumulate: true);
        Array.Copy(z.DX2, dx, t * d);
        BlockOps.RmsNormBackward(z.X, norm1, z.Inv1, z.DH, dx, t, d, accumulate: true);
    }
}

/// <summary>A model's RoPE tables: cos and sin of position p and frequency i at [p · half + i], <paramref name="Positions"/> rows of
/// half a head each.</summary>
public sealed record RopeTable(float[] Cos, float[] Sin, int Positions, int Half)
{
    /// <summary>The tables of positions 0 … t − 1.</summary>
    public (float[] Cos, float[] Sin) First(int t)
    {
        if (t > Positions)
            throw new ArgumentException($"a sequence of {t} tokens is longer than the {Positions} positions of the RoPE tables");
        return (Cos[..(t * Half)], Sin[..(t * Half)]);
    }
}

/// <summary>The activations and gradient buffers of one block for one sequence length, allocated once.</summary>
public sealed class BlockTape
{
    public int T { get; }
    public float[] X, H1, Inv1, Q, K, V, Probs, Ctx, X2, H2, Inv2, G, U, M;
    public float[] DM, DG, DU, DH, DX2, DCtx, DQ, DK, DV;

    public BlockTape(LlamaBlockShape s, int t)
    {
        T = t;
        int d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, f = s.Ffn;
        X = new float[t * d]; H1 = new float[t * d]; Inv1 = new float[t]; X2 = new float[t * d]; H2 = new float[t * d];
        Inv2 = new float[t];
        Q = new float[t * wq]; K = new float[t * wk]; V = new float[t * wk]; Ctx = new float[t * wq];
        Probs = new float[(long)s.Heads * t * t];
        G = new float[t * f]; U = new float[t * f]; M = new float[t * f];
        DM = new float[t * f]; DG = new float[t * f]; DU = new float[t * f];
        DH = new float[t * d]; DX2 = new float[t * d]; DCtx = new float[t * wq];
        DQ = new float[t * wq]; DK = new float[t * wk]; DV = new float[t * wk];
    }

    /// <summary>Bytes held.</summary>
    public long Bytes => 4L * (X.Length * 5 + Inv1.Length * 2 + Q.Length * 4 + K.Length * 4 + Probs.Length + G.Length * 6 + DH.Length
        + DX2.Length);

    /// <summary>Bytes a tape of <paramref name="t"/> tokens holds for blocks of shape <paramref name="s"/>.</summary>
    public static long BytesFor(LlamaBlockShape s, int t)
    {
        long d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim;
        return 4L * t * (d * 7 + 2 + wq * 4 + wk * 4 + (long)s.Heads * t + s.Ffn * 6);
    }
}
