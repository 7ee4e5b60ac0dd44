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

    /// <summary>Refuses a model GenAI cannot run and declares the config and tokenizer files beside <paramref name="modelPath"/>.
    /// </summary>
    public static GenaiOutputs Plan(Model floatModel, string input, string modelPath, OutputSet outputs)
    {
        var g = new GenaiOutputs(GenaiFolder.Plan(floatModel, input), Path.GetDirectoryName(Path.GetFullPath(modelPath))!, outputs);
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
