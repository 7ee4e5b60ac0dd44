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
    private readonly Dictionary<(int Slot, int T), BlockTape> _tapes = [];
    private readonly Dictionary<int, (float[] Cos, float[] Sin)> _rope = [];

    /// <summary>The order in which <see cref="Backward"/> completes the weights' gradients (down first, q/k/v last).</summary>
    public static readonly int[] GradientOrder = [6, 4, 5, 3, 0, 1, 2];

    /// <summary>The tape of slot <paramref name="slot"/> for sequences of <paramref name="t"/> tokens (allocated on first use; one
    /// slot per sequence whose backward must wait for others, e.g. the sequences of one training step).</summary>
    public BlockTape TapeFor(int t, int slot = 0)
    {
        if (!_tapes.TryGetValue((slot, t), out var tape)) _tapes[(slot, t)] = tape = new BlockTape(Shape, t);
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

    /// <summary>y [t, D] of x [t, D] with the weights <paramref name="w"/> (seven [N, K] arrays); returns the tape (of
    /// <paramref name="slot"/>). With <paramref name="quantizers"/> (one per linear, <see cref="Roles"/> order; null entries stay
    /// float) each linear reads its input fake-quantized as the runtime's static activations will be (W8A8);
    /// <see cref="BackwardActivations"/> then passes the gradient straight through the quantizer inside its grid, zero where
    /// clamped.</summary>
    public BlockTape Forward(float[] x, int t, float[][] w, float[] y, int slot = 0, InputQuantizer?[]? quantizers = null)
    {
        var s = Shape;
        var z = TapeFor(t, slot);
        if (quantizers is not null && quantizers.Length != 7) throw new ArgumentException("one input quantizer per linear (or null)");
        z.Quantizers = quantizers;
        var (cos, sin) = RopeFor(t);
        int d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim;
        Array.Copy(x, z.X, t * d);
        BlockOps.RmsNorm(z.X, norm1, z.H1, z.Inv1, t, d, s.Epsilon);
        Gemm.Nt(z.Input(0, z.H1), w[0], z.Q, t, d, wq);
        Gemm.Nt(z.Input(1, z.H1), w[1], z.K, t, d, wk);
        Gemm.Nt(z.Input(2, z.H1), w[2], z.V, t, d, wk);
        BlockOps.Rope(z.Q, t, s.Heads, s.HeadDim, cos, sin, false);
        BlockOps.Rope(z.K, t, s.KvHeads, s.HeadDim, cos, sin, false);
        BlockOps.Attention(z.Q, z.K, z.V, z.Ctx, z.Probs, t, s.Heads, s.KvHeads, s.HeadDim);
        Gemm.Nt(z.Input(3, z.Ctx), w[3], z.X2, t, wq, d);
        for (int i = 0; i < t * d; i++) z.X2[i] += x[i];
        BlockOps.RmsNorm(z.X2, norm2, z.H2, z.Inv2, t, d, s.Epsilon);
        Gemm.Nt(z.Input(4, z.H2), w[4], z.G, t, d, s.Ffn);
        Gemm.Nt(z.Input(5, z.H2), w[5], z.U, t, d, s.Ffn);
        BlockOps.SwiGlu(z.G, z.U, z.M, t * s.Ffn);
        Gemm.Nt(z.Input(6, z.M), w[6], y, t, s.Ffn, d);
        for (int i = 0; i < t * d; i++) y[i] += z.X2[i];
        return z;
    }

    /// <summary>dst = Σ_j ∂L/∂in_j of the linears j of <paramref name="parts"/> (all reading <paramref name="x"/> [t, k]): the
    /// products dOut_j · W_j, each passed through its input quantizer's straight-through backward. Without quantizers (or with one
    /// shared by all) the products are summed first, in order, then masked once.</summary>
    private static void InputGradient(float[] dst, float[] x, int t, int k, bool accumulate,
        params ReadOnlySpan<(float[] DOut, float[] W, int N, InputQuantizer? Q)> parts)
    {
        bool shared = true;
        foreach (var p in parts) shared &= p.Q == parts[0].Q;
        if (shared && (!accumulate || parts[0].Q is null))
        {
            for (int j = 0; j < parts.Length; j++) Gemm.Nn(parts[j].DOut, parts[j].W, dst, t, parts[j].N, k, accumulate || j > 0);
            parts[0].Q?.ZeroOutside(x.AsSpan(0, t * k), dst.AsSpan(0, t * k));
            return;
        }
        var tmp = System.Buffers.ArrayPool<float>.Shared.Rent(t * k);
        for (int j = 0; j < parts.Length; j++)
        {
            Gemm.Slices(parts[j].DOut, 0, false, parts[j].W, 0, false, tmp, 0, t, parts[j].N, k, false);
            parts[j].Q?.ZeroOutside(x.AsSpan(0, t * k), tmp.AsSpan(0, t * k));
            if (accumulate || j > 0) for (int i = 0; i < t * k; i++) dst[i] += tmp[i];
            else Array.Copy(tmp, dst, t * k);
        }
        System.Buffers.ArrayPool<float>.Shared.Return(tmp);
    }

    /// <summary>Adds ∂L/∂W to <paramref name="dw"/> (seven [N, K] arrays) from dy [t, D] for the sequence of <paramref name="z"/>; writes
    /// ∂L/∂x into <paramref name="dx"/> when given. dy is not changed.</summary>
    public void Backward(BlockTape z, float[][] w, float[] dy, float[][] dw, float[]? dx)
    {
        BackwardActivations(z, w, dy, dx);
        foreach (int i in GradientOrder) WeightGradient(i, z, dy, dw[i]);
    }

    /// <summary>The backward of the activations only: every gradient the weights' gradients need, kept in the tape
    /// <paramref name="z"/> (then <see cref="WeightGradient"/> per linear, in any order and as late as wanted: the tape is not
    /// changed until its next forward), and ∂L/∂x into <paramref name="dx"/> when given.</summary>
    public void BackwardActivations(BlockTape z, float[][] w, float[] dy, float[]? dx)
    {
        var s = Shape;
        int t = z.T, d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, f = s.Ffn;
        var (cos, sin) = RopeFor(t);
        var q = z.Quantizers ?? new InputQuantizer?[7];
        // MLP: y = x₂ + M·Wdᵀ.
        InputGradient(z.DM, z.M, t, f, false, (dy, w[6], d, q[6]));
        BlockOps.SwiGluBackward(z.G, z.U, z.DM, z.DG, z.DU, t * f);
        InputGradient(z.DH, z.H2, t, d, false, (z.DG, w[4], f, q[4]), (z.DU, w[5], f, q[5]));
        Array.Copy(dy, z.DX2, t * d);
        BlockOps.RmsNormBackward(z.X2, norm2, z.Inv2, z.DH, z.DX2, t, d, accumulate: true);
        // Attention: x₂ = x + Ctx·Woᵀ.
        InputGradient(z.DCtx, z.Ctx, t, wq, false, (z.DX2, w[3], d, q[3]));
        BlockOps.AttentionBackward(z.Q, z.K, z.V, z.Probs, z.DCtx, z.DQ, z.DK, z.DV, t, s.Heads, s.KvHeads, s.HeadDim);
        BlockOps.Rope(z.DQ, t, s.Heads, s.HeadDim, cos, sin, true);
        BlockOps.Rope(z.DK, t, s.KvHeads, s.HeadDim, cos, sin, true);
        if (dx is null) return;
        InputGradient(z.DH, z.H1, t, d, false, (z.DQ, w[0], wq, q[0]), (z.DK, w[1], wk, q[1]), (z.DV, w[2], wk, q[2]));
        Array.Copy(z.DX2, dx, t * d);
        BlockOps.RmsNormBackward(z.X, norm1, z.Inv1, z.DH, dx, t, d, accumulate: true);
    }

    /// <summary>Adds ∂L/∂W of linear <paramref name="i"/> (<see cref="Roles"/> order) for the sequence of <paramref name="z"/> to the
    /// first N·K values of <paramref name="dw"/>, after <see cref="BackwardActivations"/> of that tape; dy as given to it.</summary>
    public void WeightGradient(int i, BlockTape z, float[] dy, float[] dw)
    {
        var s = Shape;
        int t = z.T, d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, f = s.Ffn;
        // The input each linear read in the forward (its quantized copy under W8A8).
        var (a, b, m, n) = i switch
        {
            0 => (z.DQ, z.Inputs[0], wq, d),
            1 => (z.DK, z.Inputs[1], wk, d),
            2 => (z.DV, z.Inputs[2], wk, d),
            3 => (z.DX2, z.Inputs[3], d, wq),
            4 => (z.DG, z.Inputs[4], f, d),
            5 => (z.DU, z.Inputs[5], f, d),
            6 => (dy, z.Inputs[6], d, f),
            _ => throw new ArgumentOutOfRangeException(nameof(i)),
        };
        Gemm.Slices(a, 0, true, b, 0, false, dw, 0, m, t, n, true);
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

    /// <summary>The input quantizers of the last forward (null: float inputs).</summary>
    public InputQuantizer?[]? Quantizers { get; set; }

    /// <summary>The input each linear read in the last forward: the float activation, or its fake-quantized copy.</summary>
    public readonly float[][] Inputs = new float[7][];

    // Fake-quantized copies of the linears' inputs, allocated on first use (linears reading the same activation with the same
    // quantizer share one).
    private readonly float[]?[] _quantized = new float[7][];

    /// <summary>The input of linear <paramref name="i"/> from the activation <paramref name="x"/> under <see cref="Quantizers"/>
    /// (recorded in <see cref="Inputs"/>).</summary>
    public float[] Input(int i, float[] x)
    {
        if (Quantizers?[i] is not { } q) return Inputs[i] = x;
        // q, k, v read H1; gate and up read H2: an earlier reader of the same activation with the same quantizer has made it.
        int first = i switch { 1 or 2 => 0, 5 => 4, _ => i };
        for (int j = first; j < i; j++)
            if (Quantizers[j] == q && _quantized[j] is { } done && ReferenceEquals(Inputs[j], done)) return Inputs[i] = done;
        var buffer = _quantized[i] ??= new float[x.Length];
        q.Apply(x, buffer);
        return Inputs[i] = buffer;
    }

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

    /// <summary>Bytes a tape of <paramref name="t"/> tokens holds for blocks of shape <paramref name="s"/> (with the quantized copies
    /// of the linears' inputs when <paramref name="quantized"/>: one per activation read).</summary>
    public static long BytesFor(LlamaBlockShape s, int t, bool quantized = false)
    {
        long d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim;
        return 4L * t * (d * 7 + 2 + wq * 4 + wk * 4 + (long)s.Heads * t + s.Ffn * 6 + (quantized ? 2 * d + wq + s.Ffn : 0));
    }
}
