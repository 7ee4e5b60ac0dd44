using System.Globalization;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Models;

/// <summary>
/// The one entry point for reference models: <c>quantc models ARCH --size S --seed N --flavor F -o OUT</c>.
/// Every build is deterministic: the same arguments give byte-identical files on every machine.
/// </summary>
public static class ReferenceModels
{
    /// <summary>Architectures that can be built.</summary>
    public static IReadOnlyList<string> Architectures { get; } = ["llama", "qwen2", "opt", "mamba"];

    /// <summary>Sizes of every architecture.</summary>
    public static IReadOnlyList<string> Sizes { get; } = ["tiny", "small", "1b"];

    /// <summary>Flavors (graph shapes) of <paramref name="arch"/>.</summary>
    public static IReadOnlyList<string> Flavors(string arch) => arch switch
    {
        "llama" or "qwen2" => ["torch", "ortgenai"],
        "opt" => ["torch", "fused"],
        "mamba" => ["torch"],
        _ => throw new BadInputException($"unknown architecture '{arch}' ({string.Join(", ", Architectures)})"),
    };

    /// <summary>The default seed (the committed tiny models use it).</summary>
    public const int DefaultSeed = 0;

    /// <summary>Builds a reference model in memory (large tensors are generated lazily when saved).</summary>
    public static Model Build(string arch, string size = "tiny", int seed = DefaultSeed, string flavor = "torch")
    {
        CheckArgs(arch, size, flavor);
        switch (arch)
        {
            case "llama":
            case "qwen2":
            {
                var cfg = LlamaConfig.ForSize(size, arch);
                var m = LlamaBuilder.Build(cfg, new SyntheticLlamaWeights(cfg, seed), flavor);
                Stamp(m, size, seed);
                return m;
            }
            case "opt":
            {
                var cfg = OptConfig.ForSize(size);
                var m = OptBuilder.Build(cfg, new SyntheticOptWeights(cfg, seed), flavor);
                Stamp(m, size, seed);
                return m;
            }
            case "mamba":
            {
                var cfg = MambaConfig.ForSize(size);
                var m = MambaBuilder.Build(cfg, new SyntheticMambaWeights(cfg, seed), flavor);
                Stamp(m, size, seed);
                return m;
            }
            default:
                throw new BadInputException($"unknown architecture '{arch}'");
        }
    }

    /// <summary>Builds and writes a reference model (atomically; external data for tensors of 1 MiB and more).</summary>
    public static OnnxModelWriter.Result BuildAndSave(string arch, string size, int seed, string flavor, string outPath,
        OnnxWriteOptions? options = null)
    {
        using var m = Build(arch, size, seed, flavor);
        return m.Save(outPath, options);
    }

    /// <summary>
    /// Builds <paramref name="arch"/> from a Hugging Face checkpoint: <paramref name="configPath"/> (config.json)
    /// and <paramref name="weightsPath"/> (a .safetensors file or a sharded checkpoint's index .json). The
    /// returned object keeps the checkpoint mapped until disposed; weights are converted while the model is written.
    /// </summary>
    public static CheckpointModel BuildFromCheckpoint(string arch, string configPath, string weightsPath, string flavor = "torch")
    {
        if (!Architectures.Contains(arch))
            throw new BadInputException($"unknown architecture '{arch}' ({string.Join(", ", Architectures)})");
        if (!Flavors(arch).Contains(flavor))
            throw new BadInputException($"unknown flavor '{flavor}' for {arch} ({string.Join(", ", Flavors(arch))})");
        var ck = SafetensorsCheckpoint.Open(weightsPath);
        try
        {
            Model m = arch switch
            {
                "llama" or "qwen2" =>
                    LlamaBuilder.Build(HfConfig.Llama(configPath, arch), new CheckpointWeights(ck, "model.embed_tokens.weight"), flavor),
                "opt" => OptBuilder.Build(HfConfig.Opt(configPath), new CheckpointWeights(ck, "model.decoder.embed_tokens.weight"), flavor),
                _ => MambaBuilder.Build(HfConfig.Mamba(configPath), new CheckpointWeights(ck, "backbone.embeddings.weight"), flavor),
            };
            m.DocString = $"quantc {arch} from {Path.GetFileName(weightsPath)}";
            return new CheckpointModel(m, ck);
        }
        catch
        {
            ck.Dispose();
            throw;
        }
    }

    /// <summary>Builds from a checkpoint (see <see cref="BuildFromCheckpoint"/>) and writes the model atomically.</summary>
    public static OnnxModelWriter.Result BuildAndSaveFromCheckpoint(string arch, string configPath, string weightsPath, string flavor,
        string outPath, OnnxWriteOptions? options = null)
    {
        using var cm = BuildFromCheckpoint(arch, configPath, weightsPath, flavor);
        return cm.Model.Save(outPath, options);
    }

    /// <summary>The parameter count of a built-in configuration (without building it).</summary>
    public static long ParameterCount(string arch, string size) => arch switch
    {
        "llama" or "qwen2" => LlamaConfig.ForSize(size, arch).ParameterCount,
        "opt" => OptConfig.ForSize(size).ParameterCount,
        "mamba" => MambaConfig.ForSize(size).ParameterCount,
        _ => throw new BadInputException($"unknown architecture '{arch}'"),
    };

    private static void CheckArgs(string arch, string size, string flavor)
    {
        if (!Architectures.Contains(arch))
            throw new BadInputException($"unknown architecture '{arch}' ({string.Join(", ", Architectures)})");
        if (!Sizes.Contains(size)) throw new BadInputException($"unknown size '{size}' ({string.Join(", ", Sizes)})");
        var flavors = Flavors(arch);
        if (!flavors.Contains(flavor)) throw new BadInputException($"unknown flavor '{flavor}' for {arch} ({string.Join(", ", flavors)})");
    }

    private static void Stamp(Model m, string size, int seed)
    {
        m.SetMetadata("quantc.size", size);
        m.SetMetadata("quantc.seed", seed.ToString(CultureInfo.InvariantCulture));
        m.DocString = $"quantc reference model ({size}, seed {seed}); synthetic seeded weights with LLM outlier structure, see " +
            $"models/README.md";
    }
}
