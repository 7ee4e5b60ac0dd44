using Quantc.Core.IO;
using Quantc.Genai;
using Quantc.Ir;

namespace Quantc.Cli;

/// <summary><c>compile --genai</c>: the files of the GenAI folder declared in the command's <see cref="OutputSet"/> before any work,
/// written after the compile.</summary>
internal sealed class GenaiOutputs
{
    private readonly GenaiFolder _folder;
    private readonly string _dir;
    private readonly OutputSet _outputs;
    private readonly Dictionary<string, string> _staged = new(StringComparer.Ordinal);

    private GenaiOutputs(GenaiFolder folder, string dir, OutputSet outputs)
    {
        _folder = folder;
        _dir = dir;
        _outputs = outputs;
    }

    /// <summary>
    /// Whether compile writes a GenAI folder, planned for <paramref name="floatModel"/>: with --genai always (a model GenAI cannot
    /// run is refused); without -o by default when the model is a decoder with a KV cache (<c>past_key_values.*</c> inputs) and
    /// GenAI can run it, else one file and a note with the reason; never with --no-genai or with -o alone.
    /// </summary>
    public static (GenaiFolder? Folder, string? Note) Choose(Model floatModel, string input, bool genai, bool noGenai,
        bool outputGiven)
    {
        if (genai && noGenai) throw new Quantc.Onnx.BadInputException("--genai and --no-genai contradict each other: give one");
        if (genai) return (GenaiFolder.Plan(floatModel, input), null);
        if (noGenai || outputGiven
            || !floatModel.Graph.Inputs.Any(v => v.Name.StartsWith("past_key_values.", StringComparison.Ordinal))) return (null, null);
        try
        {
            return (GenaiFolder.Plan(floatModel, input), null);
        }
        catch (Quantc.Onnx.BadInputException e)
        {
            return (null, $"writing one model file, not a GenAI folder: {e.Message}");
        }
    }

    /// <summary>Declares the config and tokenizer files of <paramref name="folder"/> beside <paramref name="modelPath"/>.</summary>
    public static GenaiOutputs Plan(GenaiFolder folder, string modelPath, OutputSet outputs)
    {
        var g = new GenaiOutputs(folder, Path.GetDirectoryName(Path.GetFullPath(modelPath))!, outputs);
        foreach (var f in g._folder.Files) g.PathOf(f);
        return g;
    }

    public string Folder => _dir;
    public GenaiFolder Genai => _folder;

    /// <summary>Writes the files for the compiled model; the notes GenAI users should read.</summary>
    public IReadOnlyList<string> Write(Model compiled) => _folder.Write(compiled, PathOf);

    public static void Print(TextWriter stdout, GenaiOutputs g, IReadOnlyList<string> notes)
    {
        var s = g._folder.FloatShape;
        stdout.WriteLine($"GenAI folder {g.Folder}: {s.Layers} layers, {s.Heads} heads / {s.KvHeads} KV heads of {s.HeadSize}, " +
            $"vocabulary " +
            $"{s.Vocabulary}, context {s.ContextLength}, tokenizer {g._folder.Tokenizer.Kind}; run it: quantc generate {g.Folder} " +
            "--prompt \"...\"");
        foreach (var n in notes) stdout.WriteLine(Cli.Printable($"  genai: {n}"));
    }

    private string PathOf(string name)
    {
        if (!_staged.TryGetValue(name, out var p))
            _staged[name] = p = _outputs.Add("--genai", Path.Combine(_dir, name), OutputKind.GenaiFile);
        return p;
    }
}
