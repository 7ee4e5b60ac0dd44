using System.CommandLine;
using System.Globalization;
using Quantc.Genai;
using Quantc.Onnx;

namespace Quantc.Cli;

/// <summary><c>quantc generate MODEL_DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
/// [--compare ORIGINAL_DIR]</c>: text through ONNX Runtime GenAI (CPU).</summary>
internal static class GenerateCommand
{
    public static Command Build(TextWriter stdout)
    {
        var folder = new Argument<string>("model-dir") { Description = "a GenAI folder (quantc compile --genai)" };
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0: greedy; above 0: sampled with this temperature" };
        var topK = new Option<int>("--top-k") { Description = "sample among the k most likely tokens (0: all)" };
        var topP = new Option<double>("--top-p") { Description = "sample among the most likely tokens of this total probability",
            DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int?>("--seed") { Description = "random seed of the sampling" };
        var compare = new Option<string?>("--compare") { Description = "another GenAI folder (e.g. the float model's): generate greedily " +
            "with both and show where the outputs diverge" };
        var cmd = new Command("generate", "generate text from a GenAI folder with ONNX Runtime GenAI (CPU); tokens/s for prefill and " +
            "decode") { folder, prompt, maxTokens, temperature, topK, topP, seed, compare };
        cmd.SetAction(pr =>
        {
            var o = new GenerateOptions
            {
                MaxTokens = pr.GetValue(maxTokens), Temperature = pr.GetValue(temperature), TopK = pr.GetValue(topK),
                TopP = pr.GetValue(topP), Seed = pr.GetValue(seed),
            };
            if (o.MaxTokens < 1) throw new BadInputException($"--max-tokens {o.MaxTokens}: must be at least 1");
            if (!double.IsFinite(o.Temperature) || o.Temperature < 0)
                throw new BadInputException("--temperature must be a finite number ≥ 0");
            if (o.TopK < 0) throw new BadInputException("--top-k must be ≥ 0");
            if (!double.IsFinite(o.TopP) || o.TopP is <= 0 or > 1) throw new BadInputException("--top-p must be in (0, 1]");
            string? other = pr.GetValue(compare);
            if (other is not null && o.Temperature > 0)
                throw new BadInputException("--compare compares greedy outputs: leave --temperature out");
            using var model = new GenaiModel(pr.GetValue(folder)!);
            var ids = model.Encode(pr.GetValue(prompt)!);
            stdout.Write(pr.GetValue(prompt));
            var result = model.Generate(ids, o, t => { stdout.Write(Printable(t)); stdout.Flush(); });
            stdout.WriteLine();
            PrintSpeed(stdout, model.Folder, result);
            if (result.StoppedAtEos) stdout.WriteLine($"(stopped at an end-of-sequence token after {result.Generated.Count} tokens)");
            if (other is null) return ExitCodes.Ok;
            using var original = new GenaiModel(other);
            var theirs = original.Encode(pr.GetValue(prompt)!);
            if (!theirs.SequenceEqual(ids))
                throw new BadInputException($"{other} tokenizes the prompt differently ({theirs.Length} vs {ids.Length} tokens): the " +
                    $"folders " +
                    "do not share a tokenizer");
            var reference = original.Generate(ids, o);
            stdout.WriteLine(Printable(pr.GetValue(prompt) + original.Decode(reference.Generated)));
            PrintSpeed(stdout, original.Folder, reference);
            PrintDivergence(stdout, model, result.Generated, reference.Generated);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static void PrintSpeed(TextWriter stdout, string folder, GenerateResult r) =>
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[{Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder)))}] prefill {r.Prompt.Count} tokens in " +
            $"{r.Prefill.TotalMilliseconds:0.0} ms ({r.PrefillTokensPerSecond:0} tokens/s); decode {r.DecodeSteps} " +
            $"tokens in {r.Decode.TotalMilliseconds:0.0} ms ({r.DecodeTokensPerSecond:0} tokens/s)"));

    /// <summary>Where two greedy generations part: the count of agreeing tokens and the text of each from there.</summary>
    private static void PrintDivergence(TextWriter stdout, GenaiModel model, IReadOnlyList<int> compiled, IReadOnlyList<int> original)
    {
        int n = Math.Min(compiled.Count, original.Count), same = 0;
        while (same < n && compiled[same] == original[same]) same++;
        if (same == compiled.Count && same == original.Count)
        {
            stdout.WriteLine($"greedy outputs identical: all {same} generated tokens agree");
            return;
        }
        stdout.WriteLine($"greedy outputs agree on the first {same} of {Math.Max(compiled.Count, original.Count)} generated tokens; " +
            $"then compiled: \"{Printable(model.Decode(compiled.Skip(same).Take(8)))}\" vs original: " +
            $"\"{Printable(model.Decode(original.Skip(same).Take(8)))}\"");
    }

    /// <summary>Generated text with control characters other than newline and tab escaped.</summary>
    private static string Printable(string s) => string.Concat(s.Select(c => char.IsControl(c) && c is not '\n' and not '\t'
        ? $"\\x{(int)c:x2}" : c.ToString()));
}
