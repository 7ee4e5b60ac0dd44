using System.Globalization;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>
/// Gives the reference LLaMA the key-cache outliers real LLMs have (a few fixed head channels of K far larger
/// than the rest, which is what QuaRot's R3 is for; the synthetic network's keys are plain Gaussian): in every
/// KV head the two lowest-frequency RoPE pairs (channels d/2−1, d−1 and d/2−2, d−2) of k_proj's output are
/// scaled by <see cref="Factor"/> and the same channels of every query head of q_proj divided by it. RoPE
/// rotates within a pair, so it commutes with scaling both channels of a pair, and q·kᵀ is unchanged; with a
/// power-of-two factor the scores are the same bits. The key cache of the edited model carries the outliers.
/// </summary>
internal static class KeyOutliers
{
    public const float Factor = 16f;

    public static void Add(Model m)
    {
        var cfg = m.Metadata.Single(kv => kv.Key == "quantc.config").Value;
        int Field(string name) => int.Parse(System.Text.RegularExpressions.Regex.Match(cfg, $"\"{name}\":(\\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
        int d = Field("head_dim");
        int[] channels = [d / 2 - 1, d - 1, d / 2 - 2, d - 2];
        foreach (var v in m.Graph.Initializers.ToList())
        {
            bool k = v.Name.EndsWith("self_attn.k_proj.weight", StringComparison.Ordinal), q = v.Name.EndsWith("self_attn.q_proj.weight", StringComparison.Ordinal);
            if (!k && !q) continue;
            var t = v.Initializer!;
            var w = t.ToFloat32();
            long rows = t.Dims[0], cols = t.Dims[1];
            float s = k ? Factor : 1 / Factor;
            for (long head = 0; head < cols / d; head++)
                foreach (int c in channels)
                    for (long r = 0; r < rows; r++) w[r * cols + head * d + c] *= s;
            m.Graph.SetInitializer(v, Tensor.FromFloats(v.Name, t.Dims, w));
        }
    }
}
