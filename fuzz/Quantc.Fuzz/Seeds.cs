using Quantc.Core.Data;
using Quantc.Models;

namespace Quantc.Fuzz;

/// <summary>
/// The generated seeds: decoders small enough for afl-fuzz (a few KB: hidden 16, one layer, 16 positions) in each graph
/// shape the model map knows, and .npy arrays of the dtypes the data loader reads. The rest of the corpus (small ONNX
/// backend-test models, the built-in recipes, JSON lines) is committed as files.
/// </summary>
internal static class Seeds
{
    public static void Write(string dir)
    {
        string models = Path.Combine(dir, "model"), npy = Path.Combine(dir, "npy");
        Directory.CreateDirectory(models);
        Directory.CreateDirectory(npy);
        var llama = new LlamaConfig
        {
            HiddenSize = 16, IntermediateSize = 32, NumLayers = 1, NumHeads = 2, NumKvHeads = 1, HeadDim = 8,
            MaxPositions = 16, OutlierChannels = 1,
        };
        foreach (var flavor in new[] { "torch", "ortgenai" })
        {
            using var m = LlamaBuilder.Build(llama, new SyntheticLlamaWeights(llama, 0), flavor);
            m.Save(Path.Combine(models, $"micro-llama-{flavor}.onnx"));
        }
        Npy.Write(Path.Combine(npy, "ids-int64.npy"), new long[] { 1, 5, 9, 2, 7, 3, 3, 4 }, [2, 4]);
        Npy.Write(Path.Combine(npy, "floats.npy"), new float[] { 0.5f, -1f, 3.25f, 0f }, [1, 4]);
        Npy.Write(Path.Combine(npy, "ids-int32.npy"), new int[] { 1, 2, 3 }, [3]);
    }
}
