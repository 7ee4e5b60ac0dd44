using System.Text;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Onnx;
using Quantc.Passes;

namespace Quantc.Fuzz;

/// <summary>
/// The fuzz targets: each takes the bytes of one input as a user would hand it to quantc and runs the code that reads it.
/// A <see cref="BadInputException"/> is the expected answer to a bad input (exit 2 in the CLI); any other exception, a
/// crash or a hang is a finding.
/// </summary>
public static class Targets
{
    /// <summary>The target names, in the order <c>fuzz/run.sh all</c> runs them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["model", "recipe", "npy", "jsonl"];

    /// <summary>Runs target <paramref name="name"/> on <paramref name="input"/>; returns false for a bad input refused cleanly.</summary>
    public static bool Run(string name, byte[] input)
    {
        try
        {
            switch (name)
            {
                case "model": Model(input); break;
                case "recipe": Recipe(input); break;
                case "npy": Npy(input); break;
                case "jsonl": Jsonl(input); break;
                default: throw new ArgumentException($"unknown fuzz target '{name}' (known: {string.Join(", ", Names)})");
            }
            return true;
        }
        catch (BadInputException)
        {
            return false;
        }
    }

    /// <summary>A model file: read with limits, the IR built (cycles refused), validated, mapped, written back.</summary>
    private static void Model(byte[] input)
    {
        string dir = Scratch();
        string path = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(path, input);
        using var m = Quantc.Ir.Model.Load(path);
        m.Graph.FindProblems();
        LayerAnalysis.Analyze(m.Graph);
        m.Save(Path.Combine(dir, "saved.onnx"));
    }

    /// <summary>A recipe: YAML parsed with its bounds, every step bound to its pass's options, the order checked.</summary>
    private static void Recipe(byte[] input) =>
        Compiler.Value.Instantiate(Core.Pipeline.Recipe.Parse(Encoding.UTF8.GetString(input), "fuzz.yaml"));

    /// <summary>A .npy array (header, dtype, shape, data).</summary>
    private static void Npy(byte[] input)
    {
        using var s = new MemoryStream(input, writable: false);
        Core.Data.Npy.Read(s, "fuzz.npy");
    }

    /// <summary>Token ids as JSON lines, turned into model inputs for the reference llama's inputs.</summary>
    private static void Jsonl(byte[] input)
    {
        string path = Path.Combine(Scratch(), "data.jsonl");
        File.WriteAllBytes(path, input);
        DataLoader.Load(Llama.Value, path, new DataOptions { SequenceLength = 16, MaxSamples = 4 });
    }

    // Built on first use: nothing of the instrumented assemblies may run before SharpFuzz has set up afl's coverage map.
    private static readonly Lazy<Compiler> Compiler = new(() => new Compiler(Builtins.Passes()));

    /// <summary>A small decoder with the reference llama's inputs, for the data targets (built once per process).</summary>
    private static readonly Lazy<Model> Llama = new(() =>
    {
        string dir = Scratch() + "-llama";
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "llama.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave("llama", "tiny", 0, "torch", path);
        return Quantc.Ir.Model.Load(path);
    });

    /// <summary>A private folder for this process's files (in /dev/shm when there is one), emptied of the last input's.</summary>
    private static string Scratch()
    {
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        string dir = Path.Combine(root, $"quantc-fuzz-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.EnumerateFiles(dir)) File.Delete(f);
        return dir;
    }
}
