using System.Runtime.Intrinsics;

namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Adam (Kingma &amp; Ba) over one flat parameter vector with a cosine learning-rate decay to 0, as the FlexRound / LRQ reference
/// trains the rounding parameters. The two moments are float32, or float8 e4m3 groups with COAT's dynamic range expansion
/// (<see cref="ExpandedFp8Vector"/>): each group is decoded, updated and re-encoded in turn, so only one group is ever float.
/// </summary>
public sealed class Adam
{
    private readonly float[]? _m32, _v32;
    private readonly ExpandedFp8Vector? _m8, _v8;
    private readonly double _lr, _beta1, _beta2, _eps;
    private readonly int _steps, _length;
    private int _t;

    /// <summary>Adam for <paramref name="length"/> parameters, <paramref name="steps"/> steps of cosine decay from
    /// <paramref name="lr"/>; <paramref name="fp8Moments"/> stores the moments in FP8 (groups of <paramref name="group"/>, dynamic
    /// range expansion when <paramref name="expand"/>).</summary>
    public Adam(int length, double lr, int steps, bool fp8Moments, bool expand = true, int group = 128, double beta1 = 0.9,
        double beta2 = 0.999, double eps = 1e-8)
    {
        if (group is <= 0 or > 1024) throw new ArgumentException("the moment group must be in [1, 1024]");
        _lr = lr;
        _steps = Math.Max(steps, 1);
        _beta1 = beta1;
        _beta2 = beta2;
        _eps = eps;
        _length = length;
        if (fp8Moments)
        {
            _m8 = new ExpandedFp8Vector(length, group, expand);
            _v8 = new ExpandedFp8Vector(length, group, expand);
        }
        else
        {
            _m32 = new float[length];
            _v32 = new float[length];
        }
    }

    /// <summary>Bytes the moments occupy.</summary>
    public long StateBytes => _m8 is not null ? _m8.Bytes + _v8!.Bytes : 8L * _length;

    /// <summary>Bytes of the moments for <paramref name="length"/> parameters in either form (for estimates before allocating).</summary>
    public static long EstimateStateBytes(long length, bool fp8Moments, int group = 128) =>
        fp8Moments ? 2 * (length + 8 * ((length + group - 1) / group)) : 8 * length;

    /// <summary>The learning rate of the next step.</summary>
    public double CurrentRate => _lr * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(_t, _steps) / _steps));

    /// <summary>One step: <paramref name="theta"/> −= lr_t · m̂ / (√v̂ + ε).</summary>
    public void Step(float[] theta, float[] grad)
    {
        if (theta.Length != _length || grad.Length != _length) throw new ArgumentException("parameter and gradient lengths differ");
        double lr = CurrentRate;
        _t++;
        double c1 = 1 - Math.Pow(_beta1, _t), c2 = 1 - Math.Pow(_beta2, _t);
        var k = new StepConstants((float)_beta1, (float)_beta2, (float)(lr / c1), (float)(1 / Math.Sqrt(c2)), (float)_eps);
        // Element-wise (per group when FP8): chunks spread over the threads give the same values whatever the thread count.
        if (_m32 is not null)
        {
            var (m32, v32) = (_m32, _v32!);
            if (_length < ParallelLength) { Update(theta, grad, m32, v32, k); return; }
            Gemm.For(Chunks, c =>
            {
                int start = (int)((long)c * _length / Chunks), len = (int)((long)(c + 1) * _length / Chunks) - start;
                Update(theta.AsSpan(start, len), grad.AsSpan(start, len), m32.AsSpan(start, len), v32.AsSpan(start, len), k);
            });
            return;
        }
        int groups = _m8!.Groups;
        if (_length < ParallelLength) { StepGroups(theta, grad, 0, groups, k); return; }
        Gemm.For(Chunks, c => StepGroups(theta, grad, (int)((long)c * groups / Chunks), (int)((long)(c + 1) * groups / Chunks), k));
    }

    // Vectors shorter than this are updated on one thread; longer ones in this many chunks.
    private const int ParallelLength = 1 << 16, Chunks = 64;

    private void StepGroups(float[] theta, float[] grad, int g0, int g1, StepConstants k)
    {
        int group = _m8!.Group;
        Span<float> m = stackalloc float[group], v = stackalloc float[group];
        for (int g = g0; g < g1; g++)
        {
            int start = g * group, len = Math.Min(group, _length - start);
            _m8.ReadGroup(g, m[..len]);
            _v8!.ReadGroup(g, v[..len]);
            Update(theta.AsSpan(start, len), grad.AsSpan(start, len), m[..len], v[..len], k);
            _m8.WriteGroup(g, m[..len]);
            _v8.WriteGroup(g, v[..len]);
        }
    }

    private readonly record struct StepConstants(float B1, float B2, float StepSize, float Rc2, float Eps);

    // Vectors then the tail, each element by the same IEEE operations (no fused multiply-add), so both give the same bits.
    private static void Update(Span<float> theta, ReadOnlySpan<float> grad, Span<float> ms, Span<float> vs, StepConstants k)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var b1 = Vector256.Create(k.B1);
            var b2 = Vector256.Create(k.B2);
            var a1 = Vector256.Create(1 - k.B1);
            var a2 = Vector256.Create(1 - k.B2);
            var step = Vector256.Create(k.StepSize);
            var rc2 = Vector256.Create(k.Rc2);
            var eps = Vector256.Create(k.Eps);
            for (; i + 8 <= theta.Length; i += 8)
            {
                var g = Vector256.Create(grad.Slice(i, 8));
                var m = b1 * Vector256.Create(ms.Slice(i, 8)) + a1 * g;
                var v = b2 * Vector256.Create(vs.Slice(i, 8)) + a2 * g * g;
                m.CopyTo(ms.Slice(i, 8));
                v.CopyTo(vs.Slice(i, 8));
                (Vector256.Create(theta.Slice(i, 8)) - step * m / (Vector256.Sqrt(v) * rc2 + eps)).CopyTo(theta.Slice(i, 8));
            }
        }
        for (; i < theta.Length; i++)
        {
            float g = grad[i];
            float m = k.B1 * ms[i] + (1 - k.B1) * g;
            float v = k.B2 * vs[i] + (1 - k.B2) * g * g;
            ms[i] = m;
            vs[i] = v;
            theta[i] -= k.StepSize * m / (MathF.Sqrt(v) * k.Rc2 + k.Eps);
        }
    }
}
