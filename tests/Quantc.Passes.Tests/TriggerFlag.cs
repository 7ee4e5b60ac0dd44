using System.Globalization;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>Edits of the reference LLaMA's massive-activation circuit (models/README.md), for tests that need the network without it.</summary>
internal static class TriggerFlag
{
    /// <summary>
    /// Clears the trigger channel from the embedding (so no token raises the flag) and, with
    /// <paramref name="readers"/>, from the gate/up rows that read it (so the amplifying weights are gone too).
    /// </summary>
    public static void Remove(Model m, bool readers)
    {
        int flag = int.Parse(m.Metadata.Single(kv => kv.Key == "quantc.outliers.trigger_channel").Value, CultureInfo.InvariantCulture);
        foreach (var v in m.Graph.Initializers.ToList())
        {
            bool embedding = v.Name == "model.embed_tokens.weight";
            bool reader = readers && (v.Name.EndsWith("gate_proj.weight", StringComparison.Ordinal) || v.Name.EndsWith("up_proj.weight", StringComparison.Ordinal));
            if (!embedding && !reader) continue;
            var t = v.Initializer!;
            var e = t.ToFloat32();
            long rows = t.Dims[0], cols = t.Dims[1];
            if (embedding) for (long r = 0; r < rows; r++) e[r * cols + flag] = 0;
            else for (long c = 0; c < cols; c++) e[flag * cols + c] = 0;
            m.Graph.SetInitializer(v, Tensor.FromFloats(v.Name, t.Dims, e));
        }
    }
}
