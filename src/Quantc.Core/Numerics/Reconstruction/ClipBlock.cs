using Quantc.Core.Pipeline;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>A static per-tensor activation quantizer as lower_qdq emits it: q = clamp(round(x / scale) + zero), x̂ = (q − zero)·scale
/// (round half to even, as ONNX QuantizeLinear).</summary>
public readonly record struct ActivationGrid(double Scale, double Zero, double QMin, double QMax)
{
    /// <summary>The grid of <paramref name="format"/> (an integer format) for the range [lo, hi]: uint8 asymmetric with the zero point
    /// of [min(lo, 0), max(hi, 0)], the signed formats symmetric on max(|lo|, |hi|).</summary>
    public static ActivationGrid Of(NumberFormat format, double lo, double hi)
    {
        var grid = format.Grid ?? throw new ArgumentException($"{format} has no integer grid");
        if (format == NumberFormat.UInt8)
        {
            double l = Math.Min(lo, 0), h = Math.Max(hi, 0);
            double s = Math.Max((h - l) / 255, 1e-12);
            return new(s, Math.Round(-l / s), grid.Min, grid.Max);
        }
        return new(Math.Max(Math.Max(Math.Abs(lo), Math.Abs(hi)) / format.SymmetricLevels, 1e-12), 0, grid.Min, grid.Max);
    }

    /// <summary>x̂ of one value.</summary>
    public float Round(float x) => (float)((Math.Clamp(Math.Round(x / Scale) + Zero, QMin, QMax) - Zero) * Scale);

    /// <summary>x − x̂, computed in double and rounded once.</summary>
    public float Residual(float x) => (float)(x - (Math.Clamp(Math.Round(x / Scale) + Zero, QMin, QMax) - Zero) * Scale);

    /// <summary>Fake-quantizes the first <paramref name="count"/> values of <paramref name="x"/> in place.</summary>
    public void Apply(float[] x, int count)
    {
        for (int i = 0; i < count; i++) x[i] = Round(x[i]);
    }
}

/// <summary>
/// One LLaMA decoder block (the <see cref="LlamaBlock"/> computation, built from <see cref="BlockOps"/> and <see cref="Gemm"/>) with a
/// static activation quantizer on each of its four linear inputs — q/k/v (shared), o, gate/up (shared), down — and a constant prefix in
/// its key/value cache (PrefixQuant's prefix tokens: <see cref="Prefix"/> positions of float keys after RoPE and values, the sequence
/// at positions Prefix…). Optional constant transforms on the o and down inputs (an online Hadamard: input · T). For the block-wise
/// clipping search: <see cref="Begin"/> runs the stages before the input searched once, <see cref="Finish"/> the rest per candidate.
/// </summary>
public sealed class ClipBlock
{
    /// <summary>The quantized inputs, in stage order.</summary>
    public static readonly string[] InputRoles = ["q/k/v", "o", "gate/up", "down"];

    private readonly float[][] _w;
    private readonly float[] _norm1, _norm2, _cos, _sin, _prefixK, _prefixV;
    private readonly float[]? _oT, _downT;

    /// <param name="shape">Sizes (its RoPE θ is not used: the tables are given).</param>
    /// <param name="norm1">γ of the RMSNorm before q/k/v.</param>
    /// <param name="norm2">γ of the RMSNorm before gate/up.</param>
    /// <param name="w">The seven weights [N, K] in <see cref="LlamaBlock.Roles"/> order.</param>
    /// <param name="cos">cos table [positions, HeadDim / 2] from position 0.</param>
    /// <param name="sin">sin table, the same layout.</param>
    /// <param name="prefixK">The prefix keys [Prefix, KvHeads·HeadDim] (after RoPE), or empty.</param>
    /// <param name="prefixV">The prefix values, the same layout.</param>
    /// <param name="oTransform">[Heads·HeadDim]² matrix applied to the o input before its quantizer, or null.</param>
    /// <param name="downTransform">[Ffn]² matrix applied to the down input before its quantizer, or null.</param>
    public ClipBlock(LlamaBlockShape shape, float[] norm1, float[] norm2, float[][] w, float[] cos, float[] sin, float[] prefixK,
        float[] prefixV, float[]? oTransform, float[]? downTransform)
    {
        shape.Check();
        Shape = shape;
        int wq = shape.Heads * shape.HeadDim, wk = shape.KvHeads * shape.HeadDim, half = shape.HeadDim / 2;
        var sizes = shape.LinearSizes;
        if (w.Length != 7 || Enumerable.Range(0, 7).Any(i => w[i].Length != sizes[i].N * sizes[i].K))
            throw new ArgumentException("the block needs its seven weights in q, k, v, o, gate, up, down order at the block's sizes");
        if (norm1.Length != shape.Hidden || norm2.Length != shape.Hidden)
            throw new ArgumentException("norm weights must have Hidden values");
        if (cos.Length != sin.Length || cos.Length % half != 0)
            throw new ArgumentException("cos/sin tables must be [positions, HeadDim / 2]");
        if (prefixK.Length != prefixV.Length || prefixK.Length % wk != 0)
            throw new ArgumentException("prefix keys/values must be [o, KvHeads·HeadDim]");
        if (oTransform is not null && oTransform.Length != wq * wq)
            throw new ArgumentException("o transform must be [Heads·HeadDim]²");
        if (downTransform is not null && downTransform.Length != shape.Ffn * shape.Ffn)
            throw new ArgumentException("down transform must be [Ffn]²");
        (_w, _norm1, _norm2, _cos, _sin, _prefixK, _prefixV, _oT, _downT) =
            (w, norm1, norm2, cos, sin, prefixK, prefixV, oTransform, downTransform);
        Prefix = prefixK.Length / wk;
        Positions = cos.Length / half;
    }

    public LlamaBlockShape Shape { get; }

    /// <summary>Positions of the constant prefix ahead of every sequence.</summary>
    public int Prefix { get; }

    /// <summary>Positions the RoPE tables cover (prefix included).</summary>
    public int Positions { get; }

    /// <summary>The activations of one sequence between stages, and its work buffers (each at its exact size: <see cref="Gemm"/>
    /// checks sizes).</summary>
    public sealed class State
    {
        internal State(LlamaBlockShape s, int prefix, float[] x, int t, float[] cos, float[] sin)
        {
            int half = s.HeadDim / 2;
            Cos = cos.AsSpan(prefix * half, t * half).ToArray();
            Sin = sin.AsSpan(prefix * half, t * half).ToArray();
            int d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, f = s.Ffn, all = prefix + t;
            (X, T) = (x, t);
            H1 = new float[t * d]; QT = new float[t * wq]; KT = new float[t * wk]; VT = new float[t * wk];
            Q = new float[all * wq]; K = new float[all * wk]; V = new float[all * wk];
            CtxAll = new float[all * wq]; Probs = new float[(long)s.Heads * all * all];
            CtxRaw = new float[t * wq]; Ctx = new float[t * wq]; CtxQ = new float[t * wq]; O = new float[t * d];
            X2 = new float[t * d]; H2 = new float[t * d]; H2Q = new float[t * d]; Inv = new float[t];
            G = new float[t * f]; U = new float[t * f]; Act = new float[t * f]; M = new float[t * f]; MQ = new float[t * f];
        }

        public float[] X { get; }
        public int T { get; }
        internal readonly float[] Cos, Sin, H1, QT, KT, VT, Q, K, V, CtxAll, Probs, CtxRaw, Ctx, CtxQ, O, X2, H2, H2Q, Inv;
        internal readonly float[] G, U, Act, M, MQ;
    }

    /// <summary>A state for the sequence <paramref name="x"/> [t, Hidden] (kept by reference).</summary>
    public State NewState(float[] x, int t)
    {
        if (x.Length < t * Shape.Hidden) throw new ArgumentException("x must be [t, Hidden]");
        if (Prefix + t > Positions) throw new ArgumentException($"{Prefix} + {t} positions exceed the {Positions} of the RoPE tables");
        return new State(Shape, Prefix, x, t, _cos, _sin);
    }

    /// <summary>y [t, Hidden] with the quantizers <paramref name="grids"/> (four, null: float).</summary>
    public void Forward(State z, ActivationGrid?[] grids, float[] y)
    {
        Begin(z, grids, 0);
        Finish(z, grids, 0, y);
    }

    /// <summary>Runs the stages before input <paramref name="input"/> (0…3) with <paramref name="grids"/>.</summary>
    public void Begin(State z, ActivationGrid?[] grids, int input)
    {
        for (int j = 0; j < input; j++) Stage(z, j, grids[j], null);
    }

    /// <summary>Runs the stages from input <paramref name="input"/> on (after <see cref="Begin"/> with the same earlier grids) into
    /// y.</summary>
    public void Finish(State z, ActivationGrid?[] grids, int input, float[] y)
    {
        for (int j = input; j < 4; j++) Stage(z, j, grids[j], y);
    }

    /// <summary>Stage j reads what stage j − 1 wrote and writes only what later stages read, so a stage can be re-run alone.</summary>
    private void Stage(State z, int j, ActivationGrid? grid, float[]? y)
    {
        var s = Shape;
        int t = z.T, d = s.Hidden, wq = s.Heads * s.HeadDim, f = s.Ffn;
        switch (j)
        {
            case 0:
                BlockOps.RmsNorm(z.X, _norm1, z.H1, z.Inv, t, d, s.Epsilon);
                grid?.Apply(z.H1, t * d);
                Attend(z);
                if (_oT is null) Array.Copy(z.CtxAll, Prefix * wq, z.Ctx, 0, t * wq);
                else
                {
                    Array.Copy(z.CtxAll, Prefix * wq, z.CtxRaw, 0, t * wq);
                    Gemm.Nn(z.CtxRaw, _oT, z.Ctx, t, wq, wq);
                }
                break;
            case 1:
                Array.Copy(z.Ctx, z.CtxQ, t * wq);
                grid?.Apply(z.CtxQ, t * wq);
                Gemm.Nt(z.CtxQ, _w[3], z.O, t, wq, d);
                for (int i = 0; i < t * d; i++) z.X2[i] = z.X[i] + z.O[i];
                BlockOps.RmsNorm(z.X2, _norm2, z.H2, z.Inv, t, d, s.Epsilon);
                break;
            case 2:
                Array.Copy(z.H2, z.H2Q, t * d);
                grid?.Apply(z.H2Q, t * d);
                Gemm.Nt(z.H2Q, _w[4], z.G, t, d, f);
                Gemm.Nt(z.H2Q, _w[5], z.U, t, d, f);
                if (_downT is null) BlockOps.SwiGlu(z.G, z.U, z.M, t * f);
                else
                {
                    BlockOps.SwiGlu(z.G, z.U, z.Act, t * f);
                    Gemm.Nn(z.Act, _downT, z.M, t, f, f);
                }
                break;
            default:
                Array.Copy(z.M, z.MQ, t * f);
                grid?.Apply(z.MQ, t * f);
                Gemm.Nt(z.MQ, _w[6], y!, t, f, d);
                for (int i = 0; i < t * d; i++) y![i] += z.X2[i];
                break;
        }
    }

    /// <summary>Queries, keys and values of the sequence after the prefix rows, RoPE at positions Prefix…, causal attention over
    /// prefix + sequence (the prefix rows of the queries are zero and their outputs unused).</summary>
    private void Attend(State z)
    {
        var s = Shape;
        int t = z.T, o = Prefix, d = s.Hidden, wq = s.Heads * s.HeadDim, wk = s.KvHeads * s.HeadDim, all = o + t;
        Gemm.Nt(z.H1, _w[0], z.QT, t, d, wq);
        Gemm.Nt(z.H1, _w[1], z.KT, t, d, wk);
        Gemm.Nt(z.H1, _w[2], z.VT, t, d, wk);
        // RoPE of positions o…: the sequence's tables start at row o.
        BlockOps.Rope(z.QT, t, s.Heads, s.HeadDim, z.Cos, z.Sin, false);
        BlockOps.Rope(z.KT, t, s.KvHeads, s.HeadDim, z.Cos, z.Sin, false);
        Array.Clear(z.Q, 0, o * wq);
        Array.Copy(z.QT, 0, z.Q, o * wq, t * wq);
        _prefixK.CopyTo(z.K, 0);
        _prefixV.CopyTo(z.V, 0);
        Array.Copy(z.KT, 0, z.K, o * wk, t * wk);
        Array.Copy(z.VT, 0, z.V, o * wk, t * wk);
        BlockOps.Attention(z.Q, z.K, z.V, z.CtxAll, z.Probs, all, s.Heads, s.KvHeads, s.HeadDim);
    }
}
