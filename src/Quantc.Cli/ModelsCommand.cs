using System.CommandLine;
using System.Globalization;
using Quantc.Core.IO;
using Quantc.Models;
using Quantc.Onnx;

namespace Quantc.Cli;

/// <summary><c>quantc models ARCH [--size S] [--seed N] [--flavor F] [--config C --weights W] -o OUT</c>.</summary>
internal static class ModelsCommand
{
    public static Command Build(TextWriter stdout)
    {
        var arch = new Argument<string>("arch") { Description = $"architecture: {string.Join(", ", ReferenceModels.Architectures)}" };
        var size = new Option<string>("--size") { Description = $"size: {string.Join(", ", ReferenceModels.Sizes)}",
            DefaultValueFactory = _ => "tiny" };
        var seed = new Option<int>("--seed") { Description = "seed of the synthetic weights", DefaultValueFactory = _ =>
            ReferenceModels.DefaultSeed };
        var flavor = new Option<string>("--flavor") { Description = "graph shape: torch (decomposed ops, as torch.onnx exports), " +
            "ortgenai (llama: ONNX Runtime GenAI fused ops) or fused (opt: ONNX Runtime transformer-optimizer fused ops)",
            DefaultValueFactory = _ => "torch" };
        var config = new Option<string?>("--config") { Description = "Hugging Face config.json (with --weights: real weights instead of " +
            "synthetic ones)" };
        var weights = new Option<string?>("--weights") { Description = "model.safetensors, or model.safetensors.index.json of a sharded " +
            "checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = "the .onnx file to write (external data beside it)",
            Required = true };
        var force = Cli.ForceOption();
        var cmd = new Command("models",
            "build a reference model (LLaMA, OPT, Mamba) with LLM-like outlier structure, or from a Hugging Face checkpoint")
            { arch, size, seed, flavor, config, weights, output, force };
        cmd.SetAction(pr =>
        {
            string a = pr.GetValue(arch)!, f = pr.GetValue(flavor)!, o = pr.GetValue(output)!;
            string? c = pr.GetValue(config), w = pr.GetValue(weights);
            if ((c is null) != (w is null)) throw new BadInputException("--config and --weights go together");
            using var outputs = new OutputSet(pr.GetValue(force));
            outputs.AddInput(c);
            outputs.AddInput(w);
            if (w is not null && w.EndsWith(".json", StringComparison.OrdinalIgnoreCase) &&
                Path.GetDirectoryName(Path.GetFullPath(w)) is { } shards)
                foreach (var shard in Directory.EnumerateFiles(shards, "*.safetensors")) outputs.AddInput(shard);
            string staged = outputs.Add("--output", o, OutputKind.Model);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var result = c is not null
                ? ReferenceModels.BuildAndSaveFromCheckpoint(a, c, w!, f, staged)
                : ReferenceModels.BuildAndSave(a, pr.GetValue(size)!, pr.GetValue(seed), f, staged);
            outputs.Commit();
            string finalPath = Path.GetFullPath(o);
            string source = c is null ? $"{pr.GetValue(size)}, seed {pr.GetValue(seed)}" : "from " + w;
            string external = result.ExternalDataPath is null ? ""
                : string.Create(CultureInfo.InvariantCulture,
                    $" + {Path.GetFileName(result.ExternalDataPath)} ({result.ExternalTensors} " +
                    $"tensors, {result.ExternalBytes / 1048576.0:0.0} MiB)");
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{a} ({source}, {f}) → {finalPath}{external} in {sw.Elapsed.TotalSeconds:0.0} s"));
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
