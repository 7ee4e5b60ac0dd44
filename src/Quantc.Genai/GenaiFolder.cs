using System.Text.Json;
using Quantc.Core.Runtime;
using Quantc.Ir;

namespace Quantc.Genai;

/// <summary>
/// A folder ONNX Runtime GenAI opens as it is: <c>model.onnx</c> (+ <c>model.onnx.data</c>), <c>genai_config.json</c> derived from
/// the compiled graph (<see cref="DecoderShape"/>), the tokenizer files (<see cref="GenaiTokenizer"/>) and, when the model uses
/// ai.quantc operators, <c>libquantc_ops.so</c> named in the config's session options. <see cref="Plan"/> reads the float model
/// before any work, so that a model GenAI cannot run is refused first; <see cref="Write"/> writes the files for the compiled one.
/// </summary>
public sealed class GenaiFolder
{
    public const string ModelFile = "model.onnx", ConfigFile = "genai_config.json";

    private readonly long? _contextHint;

    private GenaiFolder(GenaiTokenizer tokenizer, DecoderShape shape, long? contextHint)
    {
        Tokenizer = tokenizer;
        FloatShape = shape;
        _contextHint = contextHint;
    }

    public GenaiTokenizer Tokenizer { get; }

    /// <summary>The shape of the float model (the compiled one's is read again in <see cref="Write"/>).</summary>
    public DecoderShape FloatShape { get; }

    /// <summary>The file name of the custom-op library in the folder.</summary>
    public static string CustomOpsFile => Path.GetFileName(CustomOps.LibraryPath);

    /// <summary>Checks that GenAI can run <paramref name="model"/> (loaded from <paramref name="modelPath"/>) and finds its tokenizer;
    /// <see cref="Quantc.Onnx.BadInputException"/> with the reason otherwise.</summary>
    public static GenaiFolder Plan(Model model, string modelPath)
    {
        var hint = HfConfig.Read(Path.GetDirectoryName(Path.GetFullPath(modelPath))!).MaxPositions;
        return new GenaiFolder(GenaiTokenizer.For(model, modelPath), DecoderShape.Of(model, hint), hint);
    }

    /// <summary>Names of the files written besides the model (and its data): config and tokenizer.</summary>
    public IReadOnlyList<string> Files => [ConfigFile, .. Tokenizer.Files];

    /// <summary>Writes genai_config.json and the tokenizer files for <paramref name="compiled"/>, and copies the custom-op library
    /// when it is used; <paramref name="pathOf"/> maps a file name to where to write it. Returns what GenAI users should know.</summary>
    public IReadOnlyList<string> Write(Model compiled, Func<string, string> pathOf)
    {
        // A rewrite may hide the position table from the compiled graph (prefix_tokens offsets the positions): the float model's
        // context then stands.
        var shape = DecoderShape.Of(compiled, _contextHint ?? FloatShape.ContextLength);
        string? lib = null;
        if (shape.UsesCustomOps)
        {
            if (!File.Exists(CustomOps.LibraryPath))
                throw new InvalidOperationException($"the model uses {CustomOps.Domain} operators but {CustomOps.LibraryPath} is missing");
            lib = CustomOpsFile;
            File.Copy(CustomOps.LibraryPath, pathOf(lib), overwrite: true);
        }
        var config = shape.ToConfig(ModelFile, Tokenizer.Tokens, lib);
        File.WriteAllText(pathOf(ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Tokenizer.Write(pathOf);
        var notes = shape.Notes.ToList();
        if (lib is not null)
            notes.Add($"the model uses {CustomOps.Domain} operators: {lib} (built for this machine's CPU) is named in genai_config.json");
        return notes;
    }
}
