using System.Security.Cryptography;
using System.Text;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;

namespace Quantc.Core.Tests;

/// <summary>Fixed training problems for the hold-out tests, and a fingerprint of a trainer's result (the weights kept, the errors,
/// the curve, the steps) to pin a result bit for bit.</summary>
internal static class HoldoutProblems
{
    public static float[] Random(int n, int seed, float scale = 1) => ReconstructionTests.Random(n, seed, scale);

    /// <summary>A 24×48 int4 layer (groups of 16) and <paramref name="sequences"/> cached inputs of <paramref name="rows"/> rows
    /// with correlated channels and a few strong ones.</summary>
    public static (float[] W, QuantizedWeight Rtn, List<StoredMatrix> X) Layer(int sequences, int rows, int seed, int n = 24,
        int k = 48)
    {
        var w = Random(n * k, seed, 0.2f);
        var rtn = WeightQuantizer.Rtn(w, n, k, QuantFormat.Int4, 16);
        var rng = new Random(seed + 1);
        var xs = new List<StoredMatrix>();
        for (int s = 0; s < sequences; s++)
        {
            var x = new float[rows * k];
            for (int a = 0; a < rows; a++)
            {
                double common = rng.NextDouble() * 2 - 1;
                for (int c = 0; c < k; c++) x[a * k + c] = (float)((rng.NextDouble() * 2 - 1 + common) * (c % 7 == 0 ? 4 : 1));
            }
            xs.Add(StoredMatrix.Float32(x, k));
        }
        return (w, rtn, xs);
    }

    public static readonly LlamaBlockShape Shape = new(16, 4, 2, 4, 24, 1e-5f, 10000);

    /// <summary>A small LLaMA block, its seven weights' RTN (int4, groups of 8) and <paramref name="sequences"/> samples whose input
    /// is the float input slightly perturbed (as after quantized previous blocks).</summary>
    public static (LlamaBlock Block, float[][] W, QuantizedWeight[] Rtn, List<BlockSample> Samples) Block(int sequences, int seed)
    {
        var block = new LlamaBlock(Shape, Random(16, seed).Select(v => 1 + 0.3f * v).ToArray(),
            Random(16, seed + 1).Select(v => 1 + 0.3f * v).ToArray());
        var w = Shape.LinearSizes.Select((s, i) => Random(s.N * s.K, seed + 10 + i, 1 / MathF.Sqrt(s.K))).ToArray();
        var rtn = Shape.LinearSizes.Select((s, i) => WeightQuantizer.Rtn(w[i], s.N, s.K, QuantFormat.Parse("int4"), 8)).ToArray();
        var samples = new List<BlockSample>();
        for (int s = 0; s < sequences; s++)
        {
            int t = 6 + s % 3 * 2;
            var x = Random(t * 16, seed + 50 + s, 2);
            var y = new float[t * 16];
            block.Forward(x, t, w, y);
            var xq = x.Select((v, i) => v + 0.05f * MathF.Sin(i + s)).ToArray();
            samples.Add(new BlockSample(StoredMatrix.Float32(xq, 16), StoredMatrix.Float32(y, 16)));
        }
        return (block, w, rtn, samples);
    }

    /// <summary>The settings the fingerprints were taken with (early stop on, so that it is pinned too).</summary>
    public static RoundingSettings Settings(RoundingMethod method, int iterations) => new()
    {
        Method = method, Iterations = iterations, LearningRate = method == RoundingMethod.Lrq ? 1e-2 : 5e-3, Seed = 3,
        Fp8Moments = false, Patience = 3, MinImprovement = 1e-2,
    };

    public static string Fingerprint(IEnumerable<QuantizedWeight> weights, double rtnError, double learnedError, bool keptRtn,
        int iterations, bool stopped, IEnumerable<double> curve)
    {
        var text = new StringBuilder();
        text.Append(FormattableString.Invariant($"{rtnError:R} {learnedError:R} {keptRtn} {iterations} {stopped} |"));
        foreach (double c in curve) text.Append(FormattableString.Invariant($" {c:R}"));
        using var sha = SHA256.Create();
        var bytes = new List<byte>(Encoding.UTF8.GetBytes(text.ToString()));
        foreach (var q in weights)
        {
            bytes.AddRange(q.Values.Select(v => (byte)v));
            foreach (float f in q.Scales) bytes.AddRange(BitConverter.GetBytes(f));
        }
        return $"{iterations} {stopped} {keptRtn} " + Convert.ToHexString(sha.ComputeHash(bytes.ToArray()))[..16];
    }
}
