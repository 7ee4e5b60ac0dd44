namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>Which rounding parametrization is learned.</summary>
public enum RoundingMethod
{
    /// <summary>FlexRound (Lee et al., ICML 2023): a free element-wise exponent matrix.</summary>
    FlexRound,
    /// <summary>LRQ (Lee et al., 2024): the exponent matrix as a low-rank product L·U.</summary>
    Lrq,
}

/// <summary>
/// The learnable rounding of one weight matrix W [N, K] (row n = output channel) on an integer grid, FlexRound's form:
/// Ŵ = s1 · (clamp(⌊W ⊘ (s1 · S)⌉ + z, qmin, qmax) − z) with s1 = s1⁰·exp(a) per (row, group), S = exp(P + r + c): P [N, K]
/// free (FlexRound) or L·U of rank r (LRQ), r per row and c per column, z the fixed zero point (0 when symmetric). All
/// parameters start at 0 except LRQ's U (uniform ±1/√K, as LoRA-style initialisation), so the first weights are exactly
/// round-to-nearest's (the division is by s1⁰ · 1). Gradients use the straight-through estimator: ⌊·⌉ passes the gradient,
/// clamp stops it outside the grid.
/// </summary>
public sealed class RoundingLayer
{
    // LRQ's exp-argument L·U is made this many rows at a time (into one [rows, K] buffer, not a whole [N, K] array).
    private const int LuRows = 512;
    private readonly float[] _w, _s0;
    private readonly int[] _zp;
    private readonly int _qmin, _qmax, _groupSize;
    // Per weight, as of the last Forward: Ŵ and y = W ⊘ (s1⁰·S), from which Backward and Result recompute the integer and ∂Ŵ/∂θ
    // exactly as Forward would have (8 bytes per weight besides W instead of 21). LRQ's Backward writes ∂P over y.
    private readonly float[] _what, _y;
    // LRQ's block of L·U rows, allocated once (L and U are read in place from Theta, their gradients written in place).
    private readonly float[]? _lu;
    private bool _forwarded;

    /// <summary>Output channels, input features, scale groups per row, LRQ rank (0 for FlexRound).</summary>
    public int N { get; }
    public int K { get; }
    public int Groups { get; }
    public int Rank { get; }
    public RoundingMethod Method { get; }
    public QuantFormat Format { get; }

    /// <summary>The parameters, flat: a [N·Groups], r [N], c [K], then P [N·K] (FlexRound) or L [N·Rank], U [Rank·K] (LRQ).</summary>
    public float[] Theta { get; }

    /// <summary>Offsets of the parts in <see cref="Theta"/>.</summary>
    public int OffsetR => N * Groups;
    public int OffsetC => OffsetR + N;
    public int OffsetP => OffsetC + K;
    public int OffsetU => OffsetP + N * Rank;

    /// <summary>Ŵ [N, K] as of the last <see cref="Forward"/>.</summary>
    public float[] Weights => _what;

    /// <summary>Bytes of a layer's arrays besides the float weight it reads and <see cref="Theta"/>: Ŵ, y, and LRQ's block of
    /// L·U rows.</summary>
    public static long WorkBytes(int n, int k, RoundingMethod method) =>
        8L * n * k + (method == RoundingMethod.Lrq ? 4L * Math.Min(n, LuRows) * k : 0);

    /// <summary>Starts from round-to-nearest's quantized weight <paramref name="rtn"/> of a copy of <paramref name="w"/>
    /// ([N, K]).</summary>
    public RoundingLayer(ReadOnlySpan<float> w, QuantizedWeight rtn, RoundingMethod method, int rank, int seed)
        : this(w.ToArray(), rtn, method, rank, seed)
    {
    }

    /// <summary>Starts from round-to-nearest's quantized weight <paramref name="rtn"/> of <paramref name="w"/> ([N, K]), which the
    /// layer reads (never writes) without copying it: it must not change while the layer is used.</summary>
    public RoundingLayer(float[] w, QuantizedWeight rtn, RoundingMethod method, int rank, int seed)
    {
        if (rtn.Format.IsFloat) throw new ArgumentException("learned rounding is for integer grids");
        N = rtn.N;
        K = rtn.K;
        if (w.Length != N * K) throw new ArgumentException("the weight and its quantized form differ in size");
        Format = rtn.Format;
        Method = method;
        Groups = rtn.Groups;
        _groupSize = rtn.GroupSize == 0 ? K : rtn.GroupSize;
        Rank = method == RoundingMethod.Lrq ? Math.Clamp(rank, 1, Math.Min(N, K)) : 0;
        _w = w;
        _s0 = (float[])rtn.Scales.Clone();
        _zp = rtn.ZeroPoints is { } z ? z.Select(v => (int)v).ToArray() : new int[_s0.Length];
        _qmin = (int)Format.Min;
        _qmax = (int)Format.Max;
        int length = OffsetP + (method == RoundingMethod.FlexRound ? N * K : N * Rank + Rank * K);
        Theta = new float[length];
        if (method == RoundingMethod.Lrq)
        {
            // L = 0, U ~ U(±1/√K): S = 1 at the start while U's gradient path is open.
            var rng = new Random(seed);
            float bound = 1f / MathF.Sqrt(K);
            for (int i = OffsetU; i < length; i++) Theta[i] = (float)(rng.NextDouble() * 2 - 1) * bound;
            _lu = new float[Math.Min(N, LuRows) * K];
        }
        _what = new float[N * K];
        _y = new float[N * K];
    }

    /// <summary>Learned parameters (all but U's fixed initial part count).</summary>
    public int ParameterCount => Theta.Length;

    /// <summary>Computes Ŵ and what its gradient needs from <see cref="Theta"/>.</summary>
    public void Forward()
    {
        if (_lu is null)
            ForwardRows(0, N);
        else
        {
            // L·U a block of rows at a time: each element is the same sum as in the whole product (the order depends on K only).
            for (int n0 = 0; n0 < N; n0 += LuRows)
            {
                int rows = Math.Min(LuRows, N - n0);
                Gemm.Slices(Theta, OffsetP + n0 * Rank, false, Theta, OffsetU, false, _lu, 0, rows, Rank, K, false);
                ForwardRows(n0, rows);
            }
        }
        _forwarded = true;
    }

    private const int ChunkCount = 64;
    private static int Chunks(int rows) => Math.Min(rows, ChunkCount);
    private static (int Start, int End) Range(int chunk, int rows) =>
        (chunk * rows / Chunks(rows), (chunk + 1) * rows / Chunks(rows));

    // Rows are independent: spread over the threads in fixed chunks (each value is computed alike whatever the thread count).
    private void ForwardRows(int n0, int rows) => Gemm.For(Chunks(rows), chunk =>
    {
        var (a, b) = Range(chunk, rows);
        for (int n = n0 + a; n < n0 + b; n++) ForwardRow(n, n0);
    });

    /// <summary>The integer of y: round half to even, plus the zero point, clamped to the grid.</summary>
    private int Integer(float y, int zp) => (int)Math.Clamp(Math.Round((double)y, MidpointRounding.ToEven) + zp, _qmin, _qmax);

    private float S1(int gi) => Theta[gi] == 0 ? _s0[gi] : _s0[gi] * MathF.Exp(Theta[gi]);

    /// <summary>Row n; LRQ's L·U row is row n − n0 of the block of L·U rows.</summary>
    private void ForwardRow(int n, int n0)
    {
        var theta = Theta;
        float rn = theta[OffsetR + n];
        for (int g = 0; g < Groups; g++)
        {
            int gi = n * Groups + g;
            float a = theta[gi], s0 = _s0[gi], s1 = S1(gi);
            int zp = _zp[gi];
            for (int k = g * _groupSize; k < (g + 1) * _groupSize; k++)
            {
                int i = n * K + k;
                float e = rn + theta[OffsetC + k] + (_lu is not null ? _lu[(n - n0) * K + k] : theta[OffsetP + i]);
                float x = e + a;
                float div = x == 0 ? s0 : s0 * MathF.Exp(x);
                float y = _w[i] / div;
                int q = Integer(y, zp);
                _what[i] = s1 * (q - zp);
                _y[i] = y;
            }
        }
    }

    /// <summary>The gradient of the loss with respect to <see cref="Theta"/> from its gradient <paramref name="gw"/> with respect to
    /// Ŵ (straight-through), as of the last <see cref="Forward"/>; once per <see cref="Forward"/> (LRQ's ∂P takes y's place).</summary>
    public void Backward(float[] gw, float[] grad)
    {
        if (gw.Length != N * K || grad.Length != Theta.Length) throw new ArgumentException("gradient sizes");
        // ∂P: FlexRound's is its part of the gradient; LRQ's goes over y (read first, element by element).
        BackwardTo(gw, grad, _lu is null ? grad : _y, _lu is null ? OffsetP : 0);
    }

    /// <summary>Values of θ's gradient that <see cref="BackwardInPlace"/> writes into its <c>head</c>: a, r and c for FlexRound
    /// (whose ∂P goes over ∂L/∂Ŵ), all of θ for LRQ.</summary>
    public int HeadLength => _lu is null ? OffsetP : Theta.Length;

    /// <summary><see cref="Backward(float[], float[])"/> without a gradient array of θ's size: FlexRound's ∂P is written over
    /// <paramref name="gw"/>'s first N·K values (each read before it is written), the rest of the gradient into
    /// <paramref name="head"/> (<see cref="HeadLength"/> values); θ's gradient is then head followed by gw[..N·K] (for LRQ, head
    /// alone and gw is left as it was). The same values as <see cref="Backward(float[], float[])"/>.</summary>
    public void BackwardInPlace(float[] gw, float[] head)
    {
        if (gw.Length < N * K || head.Length != HeadLength) throw new ArgumentException("gradient sizes");
        BackwardTo(gw, head, _lu is null ? gw : _y, 0);
    }

    private void BackwardTo(float[] gw, float[] grad, float[] gp, int gpAt)
    {
        if (!_forwarded) throw new InvalidOperationException("Backward needs a Forward since the last Backward");
        _forwarded = false;
        // Per row: ∂P, the row's and its groups' sums (double, in column order); then per column the sum over rows in row
        // order. Both spread over the threads without changing any sum's order.
        Gemm.For(Chunks(N), chunk =>
        {
            var (n0, n1) = Range(chunk, N);
            for (int n = n0; n < n1; n++)
            {
                double rowSum = 0;
                for (int g = 0; g < Groups; g++)
                {
                    int gi = n * Groups + g, zp = _zp[gi];
                    float s1 = S1(gi);
                    double ga = 0;
                    for (int k = g * _groupSize; k < (g + 1) * _groupSize; k++)
                    {
                        int i = n * K + k;
                        // ∂Ŵ/∂(P, r, c) = −s1·y and ∂Ŵ/∂a = s1·(q − z − y) inside the grid; 0 and s1·(q − z) where clamped.
                        float y = _y[i], gwi = gw[i];
                        double r = Math.Round((double)y, MidpointRounding.ToEven) + zp;
                        bool inside = r >= _qmin && r <= _qmax;
                        int q = (int)Math.Clamp(r, _qmin, _qmax);
                        float dp = inside ? -s1 * y : 0f, da = s1 * (q - zp - (inside ? y : 0f));
                        float v = gwi * dp;
                        gp[gpAt + i] = v;
                        rowSum += v;
                        ga += gwi * da;
                    }
                    grad[gi] = (float)ga;
                }
                grad[OffsetR + n] = (float)rowSum;
            }
        });
        Gemm.For(Chunks(K), chunk =>
        {
            var (k0, k1) = Range(chunk, K);
            var col = grad.AsSpan(OffsetC + k0, k1 - k0);
            col.Clear();
            for (int n = 0; n < N; n++)
            {
                var row = gp.AsSpan(gpAt + n * K + k0, k1 - k0);
                for (int k = 0; k < row.Length; k++) col[k] += row[k];
            }
        });
        if (_lu is null) return;
        // L and U as of the last Forward (Theta has not moved since), read in place; ∂L, ∂U written in place.
        Gemm.Slices(gp, 0, false, Theta, OffsetU, true, grad, OffsetP, N, K, Rank, false);       // ∂L = ∂P · Uᵀ
        Gemm.Slices(Theta, OffsetP, true, gp, 0, false, grad, OffsetU, Rank, N, K, false);       // ∂U = Lᵀ · ∂P
    }

    /// <summary>The quantized weight of the current parameters (call <see cref="Forward"/> first): the integers and s1 per group;
    /// zero points unchanged.</summary>
    public QuantizedWeight Result(QuantizedWeight rtn)
    {
        if (!_forwarded) throw new InvalidOperationException("Result needs a Forward since the last Backward");
        var scales = new float[_s0.Length];
        for (int gi = 0; gi < scales.Length; gi++) scales[gi] = Theta[gi] == 0 ? _s0[gi] : _s0[gi] * MathF.Exp(Theta[gi]);
        var values = new sbyte[N * K];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) values[n * K + k] = (sbyte)Integer(_y[n * K + k], _zp[n * Groups + k / _groupSize]);
        return rtn with { Values = values, Scales = scales };
    }
}
