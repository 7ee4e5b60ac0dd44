using System.Text.Json;
using Quantc.Core.Calibration;
using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Data;

/// <summary>Options for turning a data argument into model inputs.</summary>
public sealed record DataOptions
{
    /// <summary>Tokens per sample for text and id data (BOS included).</summary>
    public int SequenceLength { get; init; } = 128;

    /// <summary>Most samples to take.</summary>
    public int MaxSamples { get; init; } = 32;

    /// <summary>Seed for <c>random</c> data.</summary>
    public int Seed { get; init; } = 1234;

    /// <summary>
    /// Text is cut at blank-line document boundaries (a sample never spans two documents; each document's last,
    /// shorter piece is kept when it has at least <see cref="DataLoader.MinPieceTokens"/> tokens); false: the whole
    /// text as one token stream cut into fixed-length samples.
    /// </summary>
    public bool SplitDocuments { get; init; } = true;

    /// <summary>Text samples start with the tokenizer's BOS (when it has one); false: without (a model that carries it itself).</summary>
    public bool Bos { get; init; } = true;
}

/// <summary>Model inputs made from a data argument, with the token ids (for perplexity) when the data is text or ids.</summary>
public sealed record LoadedData(IReadOnlyList<CalibrationSample> Samples, IReadOnlyList<long[]>? Tokens, string Description,
    IReadOnlyList<string> Warnings);

/// <summary>
/// Turns <c>--calib</c> / <c>--data</c> arguments into model inputs: a text file (tokenized with the
/// model's tokenizer), token ids (.npy int32/int64, or JSON lines), raw input tensors (.npz per
/// sample, or a folder of them), or <c>random</c> (only when asked for, with a warning). For
/// decoder models the other inputs (attention_mask, position_ids, empty past KV) are filled in.
/// </summary>
public static class DataLoader
{
    /// <summary>Loads <paramref name="spec"/> for <paramref name="model"/>.</summary>
    public static LoadedData Load(Model model, string spec, DataOptions? options = null)
    {
        options ??= new DataOptions();
        if (options.SequenceLength < 2) throw new BadInputException("sequence length must be at least 2");
        if (options.MaxSamples < 1) throw new BadInputException("sample count must be at least 1");
        if (spec == "random") return Random(model, options);
        if (Directory.Exists(spec))
        {
            var files = Directory.GetFiles(spec, "*.npz").Order(StringComparer.Ordinal).Take(options.MaxSamples).ToList();
            if (files.Count == 0) throw new BadInputException($"{spec}: folder holds no .npz samples");
            return new LoadedData(files.Select(f => FromArchive(model, f)).ToList(), null, $"{files.Count} input sets from {spec}", []);
        }
        if (!File.Exists(spec)) throw new BadInputException($"{spec}: data file not found");
        string ext = Path.GetExtension(spec).ToLowerInvariant();
        return ext switch
        {
            ".npz" => new LoadedData([FromArchive(model, spec)], null, $"1 input set from {spec}", []),
            ".npy" => FromNpy(model, spec, options),
            ".jsonl" or ".json" => FromIds(model, JsonIds(spec), options, $"token ids from {spec}", spec),
            _ => FromText(model, spec, options),
        };
    }

    private static LoadedData FromText(Model model, string path, DataOptions options)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new BadInputException($"{path}: cannot read " +
            $"({e.Message})"); }
        if (text.Contains('\0')) throw new BadInputException($"{path}: not a text file (give .npy/.npz/.jsonl data for non-text input)");
        var tok = TokenizerFor(model);
        long? bos = options.Bos ? tok.Bos : null;
        int body = options.SequenceLength - (bos is null ? 0 : 1);
        long[] Sample(long[] ids, int off, int take) => (bos is { } b ? new[] { b } : []).Concat(ids.Skip(off).Take(take)).ToArray();
        var seqs = new List<long[]>();
        if (!options.SplitDocuments)
        {
            var ids = tok.Encode(text);
            for (int off = 0; off + body <= ids.Length && seqs.Count < options.MaxSamples; off += body) seqs.Add(Sample(ids, off, body));
            if (seqs.Count == 0) throw new BadInputException($"{path}: text too short for one sample of {options.SequenceLength} tokens");
            return FromIds(model, seqs, options with { MaxSamples = seqs.Count },
                $"{seqs.Count} × {options.SequenceLength} tokens of {Path.GetFileName(path)} ({tok.Name} tokenizer; one token stream cut " +
                    $"every {body} tokens, across document boundaries)", path);
        }
        int docs = 0;
        foreach (var doc in Documents(text))
        {
            if (seqs.Count >= options.MaxSamples) break;
            var ids = tok.Encode(doc);
            docs++;
            for (int off = 0; off < ids.Length && seqs.Count < options.MaxSamples; off += body)
            {
                int take = Math.Min(body, ids.Length - off);
                if (take < Math.Min(MinPieceTokens, body)) break;
                seqs.Add(Sample(ids, off, take));
            }
        }
        if (seqs.Count == 0) throw new BadInputException($"{path}: no document of at least {MinPieceTokens} tokens");
        int full = seqs.Count(x => x.Length == options.SequenceLength);
        string lengths = full == seqs.Count ? $"{seqs.Count} × {options.SequenceLength} tokens"
            : $"{seqs.Count} samples of ≤ {options.SequenceLength} tokens ({full} full, {seqs.Sum(x => (long)x.Length)} tokens in all)";
        return FromIds(model, seqs, options with { MaxSamples = seqs.Count },
            $"{lengths} of {Path.GetFileName(path)} ({tok.Name} tokenizer; cut at blank-line document boundaries, {docs} " +
                $"documents{(bos is not null ? ", BOS first in each sample" : tok.Bos is null ? "" : ", without BOS")})", path);
    }

    /// <summary>The shortest last piece of a document kept as a sample (in tokens, before BOS).</summary>
    public const int MinPieceTokens = 8;

    /// <summary>The documents of a text: its pieces between blank lines, trimmed, empty ones dropped.</summary>
    public static IEnumerable<string> Documents(string text) =>
        System.Text.RegularExpressions.Regex.Split(text.Replace("\r\n", "\n", StringComparison.Ordinal), @"\n[ \t]*\n")
            .Select(d => d.Trim()).Where(d => d.Length > 0);

    /// <summary>The tokenizer of a model: quantc's byte-level one for the reference models (metadata "quantc.tokenizer" = "byte"), else
    /// tokenizer.model / tokenizer.json next to the model.</summary>
    public static ITokenizer TokenizerFor(Model model)
    {
        foreach (var kv in model.Metadata)
            if (kv.Key == "quantc.tokenizer" && kv.Value == "byte") return new ByteTokenizer();
        if (model.File is not null && HfTokenizer.FromFolder(model.File.Directory) is { } hf) return hf;
        var logits = model.Graph.Outputs.FirstOrDefault(o => o.Name == "logits");
        if (logits?.Shape is { Length: > 0 } s && s[^1] == ByteTokenizer.VocabSize) return new ByteTokenizer();
        throw new BadInputException("no tokenizer for this model: put tokenizer.json or tokenizer.model next to it, or give token ids " +
            "(.npy or .jsonl) instead of text");
    }

    private static LoadedData FromIds(Model model, List<long[]> ids, DataOptions options, string what, string source)
    {
        if (!model.Graph.Inputs.Any(v => CalibrationInputs.IsTokenInput(v.Name)))
            throw new BadInputException("token data given, but the model has no input_ids input");
        // Sequences longer than the sequence length are cut into consecutive pieces of it (a last piece of 2 tokens or more kept).
        int cut = ids.Count(s => s.Length > options.SequenceLength);
        var seqs = ids.Where(s => s.Length > 0)
            .SelectMany(s => s.Length <= options.SequenceLength ? [s]
                : s.Chunk(options.SequenceLength).Where(c => c.Length >= 2))
            .Take(options.MaxSamples).ToList();
        if (seqs.Count == 0) throw new BadInputException($"{what}: no token ids");
        TokenLimits.Of(model.Graph).Check(seqs, source);
        if (cut > 0)
            what += $" ({seqs.Count} samples: {cut} sequence{(cut == 1 ? "" : "s")} longer than {options.SequenceLength} tokens cut into " +
                $"pieces of {options.SequenceLength})";
        return new LoadedData(seqs.Select(s => CalibrationInputs.FromTokens(model.Graph, s)).ToList(), seqs, what, []);
    }

    /// <summary>An .npy of token ids (int32/int64) for a text model, or the one input of a model with a single input.</summary>
    private static LoadedData FromNpy(Model model, string path, DataOptions options)
    {
        var a = Npy.Read(path);
        if (a.Data is long[] or int[]) return FromIds(model, NpyIds(path, a), options, $"token ids from {path}", path);
        var inputs = model.Graph.Inputs.Where(v => !v.IsInitializer).ToList();
        if (inputs.Count != 1)
            throw new BadInputException($"{path}: a float .npy can only feed a model with one input (this one has {inputs.Count}); use " +
                $".npz files named by input");
        var s = new CalibrationSample();
        s.Inputs[inputs[0].Name] = (a.Data, a.Shape);
        return new LoadedData([s], null, $"1 input set from {path}", []);
    }

    private static List<long[]> NpyIds(string path, NpyArray a)
    {
        long[] flat = a.Data switch
        {
            long[] l => l,
            int[] i => i.Select(x => (long)x).ToArray(),
            _ => throw new BadInputException($"{path}: token ids must be int32 or int64 (raw float inputs go in .npz files named by " +
                $"input)"),
        };
        if (a.Shape.Length == 1) return [flat];
        if (a.Shape.Length != 2) throw new BadInputException($"{path}: token ids must be [samples, seq] or [seq], not {a.Shape.Length}-D");
        int n = (int)a.Shape[0], seq = (int)a.Shape[1];
        return Enumerable.Range(0, n).Select(r => flat.AsSpan(r * seq, seq).ToArray()).ToList();
    }

    private static List<long[]> JsonIds(string path)
    {
        var result = new List<long[]>();
        int line = 0;
        foreach (var l in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(l)) continue;
            try { result.Add(JsonSerializer.Deserialize<long[]>(l) ?? throw new JsonException("null")); }
            catch (JsonException) { throw new BadInputException($"{path}:{line}: each line must be a JSON array of token ids"); }
        }
        return result;
    }

    private static CalibrationSample FromArchive(Model model, string path)
    {
        var s = new CalibrationSample();
        var arrays = Npy.ReadArchive(path).ToDictionary(x => x.Name, x => x.Array, StringComparer.Ordinal);
        var limits = TokenLimits.Of(model.Graph) with { FixedInputs = [] };   // raw inputs are checked against the declared shapes below
        foreach (var input in model.Graph.Inputs.Where(v => !v.IsInitializer))
        {
            if (!arrays.TryGetValue(input.Name, out var arr))
                throw new BadInputException($"{path}: no array for model input '{input.Name}' (arrays: {string.Join(", ", arrays.Keys)})");
            var shape = input.Shape;
            if (shape is not null && (shape.Length != arr.Shape.Length || shape.Zip(arr.Shape).Any(p => p.First is { } d && d != p.Second)))
                throw new BadInputException($"{path}: array '{input.Name}' has shape [{string.Join(",", arr.Shape)}], the model wants " +
                    $"[{string.Join(",", shape.Select(d => d?.ToString() ?? "?"))}]");
            s.Inputs[input.Name] = (arr.Data, arr.Shape);
            // Token ids given as a raw input ([batch, tokens]) are checked like token data.
            if (CalibrationInputs.IsTokenInput(input.Name) && arr.Shape.Length == 2 && arr.Data is long[] or int[])
                limits.Check(NpyIds(path, arr), $"{path}: '{input.Name}'");
        }
        return s;
    }

    private static LoadedData Random(Model model, DataOptions options)
    {
        var rng = new System.Random(options.Seed);
        var warn = "calibrating on random data: ranges will not reflect real inputs";
        var samples = new List<CalibrationSample>();
        var tokens = new List<long[]>();
        bool text = model.Graph.Inputs.Any(v => CalibrationInputs.IsTokenInput(v.Name));
        int vocab = (int)(model.Graph.Outputs.FirstOrDefault(o => o.Name == "logits")?.Shape?.LastOrDefault() ?? 100);
        for (int i = 0; i < options.MaxSamples; i++)
        {
            if (text)
            {
                var ids = Enumerable.Range(0, options.SequenceLength).Select(_ => (long)rng.Next(vocab)).ToArray();
                samples.Add(CalibrationInputs.FromTokens(model.Graph, ids));
                tokens.Add(ids);
                continue;
            }
            var s = new CalibrationSample();
            foreach (var input in model.Graph.Inputs.Where(v => !v.IsInitializer))
            {
                var dims = (input.Shape
                    ?? throw new BadInputException($"input '{input.Name}' has no shape; cannot make random data for it"))
                    .Select(d => d ?? 1).ToArray();
                long n = dims.Aggregate(1L, (a, b) => a * b);
                s.Inputs[input.Name] = input.ElementType switch
                {
                    (int)DT.Float => (Enumerable.Range(0, (int)n).Select(_ => Gauss(rng)).ToArray(), dims),
                    (int)DT.Int64 => (Enumerable.Range(0, (int)n).Select(_ => (long)rng.Next(100)).ToArray(), dims),
                    (int)DT.Int32 => (Enumerable.Range(0, (int)n).Select(_ => rng.Next(100)).ToArray(), dims),
                    _ => throw new BadInputException($"cannot make random data for input '{input.Name}' of " +
                        $"type {DataTypes.Name(input.ElementType)}"),
                };
            }
            samples.Add(s);
        }
        return new LoadedData(samples, text ? tokens : null, $"{options.MaxSamples} random samples", [warn]);
    }

    private static float Gauss(System.Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
}
