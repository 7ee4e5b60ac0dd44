using Quantc.Core.Data;
using Quantc.Core.Verification;
using Quantc.Genai;
using Quantc.Ir;
using Quantc.Models;

namespace Quantc.Genai.Tests;

/// <summary>The trained LLaMA of ../shared/real with its SentencePiece tokenizer.model: the tokenizer.json written for GenAI encodes
/// text as quantc's own SentencePiece reader does (what calibration and verification used), and GenAI's greedy generation equals
/// a plain ONNX Runtime greedy loop.</summary>
public sealed class RealTokenizerTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-genai-real-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string RealDir() => Quantc.Tests.Shared.RealModels.Dir();

    private static string Words(string s) => string.Join(' ', s.Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries));

    [Fact]
    public void SentencePieceFolderTokenizesAsQuantcAndGeneratesAsOnnxRuntime()
    {
        string real = RealDir(), src = Path.Combine(real, "babyllama-tok105");
        string source = Path.Combine(_dir.FullName, "src"), dir = Path.Combine(_dir.FullName, "genai");
        Directory.CreateDirectory(source);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(source, "model.onnx");
        ReferenceModels.BuildAndSaveFromCheckpoint("llama", Path.Combine(src, "config.json"), Path.Combine(src, "model.safetensors"),
            "torch",
            path);
        File.Copy(Path.Combine(src, "tokenizer.model"), Path.Combine(source, "tokenizer.model"));
        using var m = Model.Load(path);
        var folder = GenaiFolder.Plan(m, path);
        File.Copy(path, Path.Combine(dir, GenaiFolder.ModelFile));
        folder.Write(m, f => Path.Combine(dir, f));

        string text = File.ReadAllText(Path.Combine(real, "text", "tinystories-valid.txt"))[..1500].TrimEnd();
        // (SentencePiece also drops trailing and repeated spaces — remove_extra_whitespaces —, which tokenizer.json does not.)
        var quantc = HfTokenizer.FromFolder(source)!;
        using var genai = new GenaiModel(dir);
        var ids = genai.Encode(text);
        Assert.Equal([quantc.Bos!.Value, .. quantc.Encode(text)], ids.Select(i => (long)i));
        // Newlines are outside this character-level vocabulary: <unk> both ways, decoded as nothing, so the text comes back without them;
        // GenAI's
        // decoder also keeps the space SentencePiece puts before the first word.
        Assert.Contains(0, ids);
        string decoded = genai.Decode(ids);
        Assert.Equal(Words(text.Replace("\n", "", StringComparison.Ordinal)), Words(decoded));

        var prompt = genai.Encode("Once upon a time");
        var ours = genai.Generate(prompt, new GenerateOptions { MaxTokens = 48 });
        var loop = GreedyDecoding.Decode(m, prompt.Select(i => (long)i).ToList(), 48)!;
        Assert.Equal(loop.Take(ours.Generated.Count).Select(t => (int)t), ours.Generated);
        Assert.Equal(ours.Generated.Count < 48, ours.StoppedAtEos);
        Assert.StartsWith(", there was", genai.Decode(ours.Generated), StringComparison.Ordinal);
    }
}
