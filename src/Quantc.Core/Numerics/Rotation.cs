namespace Quantc.Core.Numerics;

/// <summary>
/// A seeded orthogonal d×d matrix Q for the fused rotations of QuaRot (R1, R2): the randomised Hadamard
/// Q = diag(s)·H_d/√d with s a seeded ±1 vector when a Hadamard matrix of order d exists, else a seeded
/// random orthogonal matrix (Gram–Schmidt of a ±1 matrix, in double). Applied in double to row vectors,
/// x ↦ x·Q, through a fast Hadamard transform where possible, so rotating large weights stays cheap.
/// Deterministic: only IEEE +, −, ×, ÷ and √, so the same seed gives the same matrix on every machine.
/// </summary>
public sealed class Rotation
{
    private readonly double[] _signs = [];
    private readonly double[]? _dense;   // row-major Q, for the random fallback
    private readonly sbyte[] _base = [];
    private readonly long _pow2;
    private readonly int _m;

    private Rotation(long size, int seed, bool hadamard)
    {
        Size = size;
        Seed = seed;
        IsHadamard = hadamard;
        if (hadamard)
        {
            Hadamard.TrySplit(size, out _pow2, out _m);
            _base = Hadamard.BaseMatrix(_m);
            var rng = new SplitMix(seed);
            _signs = new double[size];
            for (long i = 0; i < size; i++) _signs[i] = (rng.Next() & 1) == 0 ? 1 : -1;
        }
        else _dense = RandomOrthogonal(checked((int)size), seed);
    }

    /// <summary>The order d.</summary>
    public long Size { get; }

    /// <summary>The seed it was drawn with.</summary>
    public int Seed { get; }

    /// <summary>True for the randomised Hadamard, false for the random orthogonal fallback (no Hadamard matrix of order d).</summary>
    public bool IsHadamard { get; }

    /// <summary>What it is, for logs: "randomised Hadamard 128 (seed 0)" or "random orthogonal 100 (seed 0; no Hadamard matrix of that
    /// order)".</summary>
    public string Description => IsHadamard
        ? $"randomised Hadamard {Size} (seed {Seed})"
        : $"random orthogonal {Size} (seed {Seed}; no Hadamard matrix of that order)";

    /// <summary>The rotation of order <paramref name="size"/> for <paramref name="seed"/>.</summary>
    public static Rotation Create(long size, int seed)
    {
        if (size <= 0) throw new ArgumentOutOfRangeException(nameof(size), "rotation order must be positive");
        return new Rotation(size, seed, Hadamard.IsSupported(size));
    }

    /// <summary>x ← x·Q for one row vector of length d (in place).</summary>
    public void ApplyRow(Span<double> x)
    {
        if (x.Length != Size) throw new ArgumentException($"row of length {x.Length}, rotation of order {Size}");
        if (_dense is { } q)
        {
            int d = x.Length;
            Span<double> y = d <= 1024 ? stackalloc double[d] : new double[d];
            y.Clear();
            for (int i = 0; i < d; i++)
            {
                double xi = x[i];
                if (xi == 0) continue;
                var row = q.AsSpan(i * d, d);
                for (int j = 0; j < d; j++) y[j] += xi * row[j];
            }
            y.CopyTo(x);
            return;
        }
        // (x·D·H)_j = Σ_i s_i x_i H_ij = (Hᵀ (s ⊙ x))_j, with H = H_m ⊗ H_p (Sylvester H_p is symmetric):
        // a Walsh–Hadamard transform of each block of p, then the blocks mixed by H_mᵀ.
        for (int i = 0; i < x.Length; i++) x[i] *= _signs[i];
        int p = (int)_pow2, m = _m;
        for (int a = 0; a < m; a++) Hadamard.Fwht(x.Slice(a * p, p));
        if (m > 1)
        {
            var mixed = new double[x.Length];
            for (int c = 0; c < m; c++)
                for (int a = 0; a < m; a++)
                {
                    var src = x.Slice(a * p, p);
                    var dst = mixed.AsSpan(c * p, p);
                    if (_base[a * m + c] > 0) for (int t = 0; t < p; t++) dst[t] += src[t];
                    else for (int t = 0; t < p; t++) dst[t] -= src[t];
                }
            mixed.CopyTo(x);
        }
        double scale = 1.0 / Math.Sqrt(Size);
        for (int i = 0; i < x.Length; i++) x[i] *= scale;
    }

    /// <summary>x ← x·Q for every consecutive d-chunk of <paramref name="x"/> (its length a multiple of d), in float with double
    /// arithmetic.</summary>
    public void ApplyChunks(Span<float> x)
    {
        int d = (int)Size;
        if (x.Length % d != 0) throw new ArgumentException($"length {x.Length} is not a multiple of the rotation order {d}");
        var buf = new double[d];
        for (int o = 0; o < x.Length; o += d)
        {
            var chunk = x.Slice(o, d);
            for (int i = 0; i < d; i++) buf[i] = chunk[i];
            ApplyRow(buf);
            for (int i = 0; i < d; i++) chunk[i] = (float)buf[i];
        }
    }

    /// <summary>The matrix Q (row-major, double), for tests.</summary>
    public double[] Matrix()
    {
        int d = (int)Size;
        var q = new double[d * d];
        var e = new double[d];
        for (int i = 0; i < d; i++)
        {
            Array.Clear(e);
            e[i] = 1;
            ApplyRow(e);     // row i of Q = e_i·Q
            e.CopyTo(q, i * d);
        }
        return q;
    }

    /// <summary>Modified Gram–Schmidt (twice, for orthogonality to rounding) of the rows of a seeded ±1 matrix.</summary>
    private static double[] RandomOrthogonal(int d, int seed)
    {
        var rng = new SplitMix(seed ^ 0x5bd1e995);
        var q = new double[d * d];
        for (int i = 0; i < d; i++)
        {
            var row = q.AsSpan(i * d, d);
            for (int attempt = 0; ; attempt++)
            {
                for (int j = 0; j < d; j++) row[j] = (rng.Next() & 1) == 0 ? 1 : -1;
                for (int pass = 0; pass < 2; pass++)
                    for (int k = 0; k < i; k++)
                    {
                        var prev = q.AsSpan(k * d, d);
                        double dot = 0;
                        for (int j = 0; j < d; j++) dot += row[j] * prev[j];
                        for (int j = 0; j < d; j++) row[j] -= dot * prev[j];
                    }
                double norm = 0;
                for (int j = 0; j < d; j++) norm += row[j] * row[j];
                norm = Math.Sqrt(norm);
                if (norm > 1e-6 || attempt > 100)
                {
                    for (int j = 0; j < d; j++) row[j] /= norm;
                    break;
                }
            }
        }
        return q;
    }

    /// <summary>SplitMix64: a small deterministic generator.</summary>
    private struct SplitMix(long seed)
    {
        private ulong _state = (ulong)seed;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
