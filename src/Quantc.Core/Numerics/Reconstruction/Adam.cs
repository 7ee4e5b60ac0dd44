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
        if (grad.Length != _length) throw new ArgumentException("parameter and gradient lengths differ");
        Step(theta, grad, null);
    }

    /// <summary>One step with the gradient in two parts: <paramref name="head"/>, then the first θ.Length − head.Length values of
    /// <paramref name="tail"/> (e.g. FlexRound's ∂P written over ∂L/∂Ŵ, <see cref="RoundingLayer.BackwardInPlace"/>). The same
    /// values as <see cref="Step(float[], float[])"/> on the joined gradient.</summary>
    public void Step(float[] theta, float[] head, float[]? tail)
    {
        if (theta.Length != _length || head.Length > _length || (head.Length < _length && (tail?.Length ?? 0) < _length - head.Length))
            throw new ArgumentException("parameter and gradient lengths differ");
        var grad = new SplitGradient(head, tail ?? []);
        double lr = CurrentRate;
        _t++;
        double c1 = 1 - Math.Pow(_beta1, _t), c2 = 1 - Math.Pow(_beta2, _t);
        var k = new StepConstants((float)_beta1, (float)_beta2, (float)(lr / c1), (float)(1 / Math.Sqrt(c2)), (float)_eps);
        // Element-wise (per group when FP8): chunks spread over the threads give the same values whatever the thread count.
        if (_m32 is not null)
        {
            var (m32, v32) = (_m32, _v32!);
            if (_length < ParallelLength) { UpdateRange(theta, grad, m32, v32, 0, _length, k); return; }
            Gemm.For(Chunks, c =>
            {
                int start = (int)((long)c * _length / Chunks), end = (int)((long)(c + 1) * _length / Chunks);
                UpdateRange(theta, grad, m32, v32, start, end - start, k);
            });
            return;
        }
        int groups = _m8!.Groups;
        if (_length < ParallelLength) { StepGroups(theta, grad, 0, groups, k); return; }
        Gemm.For(Chunks, c => StepGroups(theta, grad, (int)((long)c * groups / Chunks), (int)((long)(c + 1) * groups / Chunks), k));
    }

    /// <summary>A gradient vector as a head array followed by a tail array.</summary>
    private readonly record struct SplitGradient(float[] Head, float[] Tail)
    {
        /// <summary>Values [start, start + len): a span of one part, or copied into <paramref name="buffer"/> where they straddle
        /// the two.</summary>
        public ReadOnlySpan<float> Slice(int start, int len, Span<float> buffer)
        {
            int h = Head.Length;
            if (start + len <= h) return Head.AsSpan(start, len);
            if (start >= h) return Tail.AsSpan(start - h, len);
            Head.AsSpan(start, h - start).CopyTo(buffer);
            Tail.AsSpan(0, start + len - h).CopyTo(buffer[(h - start)..]);
            return buffer[..len];
        }
    }

    // Values [start, start + len) of the float32 moments, split where the gradient's head ends (Update gives each element the same
    // bits wherever a span starts).
    private static void UpdateRange(float[] theta, SplitGradient grad, float[] m, float[] v, int start, int len, StepConstants k)
    {
        int end = start + len, h = grad.Head.Length;
        if (start < h)
        {
            int e = Math.Min(end, h);
            Update(theta.AsSpan(start, e - start), grad.Head.AsSpan(start, e - start), m.AsSpan(start, e - start),
                v.AsSpan(start, e - start), k);
            start = e;
        }
        if (start < end)
            Update(theta.AsSpan(start, end - start), grad.Tail.AsSpan(start - h, end - start), m.AsSpan(start, end - start),
                v.AsSpan(start, end - start), k);
    }

    // Vectors shorter than this are updated on one thread; longer ones in this many chunks.
    private const int ParallelLength = 1 << 16, Chunks = 64;

    private void StepGroups(float[] theta, SplitGradient grad, int g0, int g1, StepConstants k)
    {
        int group = _m8!.Group;
        Span<float> m = stackalloc float[group], v = stackalloc float[group], joined = stackalloc float[group];
        for (int g = g0; g < g1; g++)
        {
            int start = g * group, len = Math.Min(group, _length - start);
            _m8.ReadGroup(g, m[..len]);
            _v8!.ReadGroup(g, v[..len]);
            Update(theta.AsSpan(start, len), grad.Slice(start, len, joined), m[..len], v[..len], k);
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
