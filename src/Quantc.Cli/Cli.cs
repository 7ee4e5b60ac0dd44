using System.CommandLine;
using System.Numerics;
using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Cli;

/// <summary>Exit codes of the quantc command.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A check failed (e.g. verify thresholds).</summary>
    public const int ChecksFailed = 1;
    /// <summary>Bad input or usage; one clear line on stderr, no partial output.</summary>
    public const int BadInput = 2;
    /// <summary>A bug in quantc.</summary>
    public const int Internal = 3;
}

/// <summary>The quantc command line: parses, dispatches, and maps failures to exit codes.</summary>
public static class Cli
{
    /// <summary>Runs quantc with <paramref name="args"/>; never throws.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            var root = BuildRoot(stdout, stderr);
            var parse = root.Parse(args);
            if (parse.Errors.Count > 0)
            {
                var err = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal))
                    ?? parse.Errors[0];
                stderr.WriteLine($"quantc: error: {err.Message} (see 'quantc --help')");
                return ExitCodes.BadInput;
            }
            var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
            return parse.Invoke(config);
        }
        catch (Exception e) when (Unwrap(e) is BadInputException bad)
        {
            stderr.WriteLine($"quantc: error: {OneLine(bad.Message)}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (Unwrap(e) is IOException or UnauthorizedAccessException)
        {
            // The environment, not quantc: a full disk, a folder that became unwritable, a file removed under us.
            stderr.WriteLine($"quantc: error: {OneLine(Unwrap(e).Message)}");
            return ExitCodes.BadInput;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"quantc: internal error: {e.GetType().Name}: {OneLine(e.Message)}");
            if (Environment.GetEnvironmentVariable("QUANTC_DEBUG") is { Length: > 0 }) stderr.WriteLine(e);
            else stderr.WriteLine("quantc: this is a bug; set QUANTC_DEBUG=1 for the stack trace and please report it");
            return ExitCodes.Internal;
        }
    }

    private static Exception Unwrap(Exception e) =>
        e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) :
        e is System.Reflection.TargetInvocationException { InnerException: { } i } ? Unwrap(i) : e;

    /// <summary>One printable line: line breaks become spaces, other control characters (ESC...) from garbled input become '?'.</summary>
    private static string OneLine(string s) =>
        new string(s.ReplaceLineEndings(" ").Select(c => char.IsControl(c) ? '?' : c).ToArray()).Trim();

    /// <summary>
    /// <paramref name="s"/> safe to print on a terminal: names from a model (producer, nodes, tensors, symbolic
    /// dimensions) may hold escape sequences that would move the cursor or clear the screen. Control characters
    /// become \xNN, invisible format characters (bidirectional overrides...) \uNNNN; the rest is unchanged.
    /// </summary>
    internal static string Printable(string s)
    {
        if (!s.Any(Unprintable)) return s;
        var b = new System.Text.StringBuilder(s.Length + 16);
        foreach (char c in s)
            if (!Unprintable(c)) b.Append(c);
            else b.Append(c <= 0xFF ? $"\\x{(int)c:x2}" : $"\\u{(int)c:x4}");
        return b.ToString();
    }

    private static bool Unprintable(char c) =>
        char.IsControl(c) || char.GetUnicodeCategory(c) is System.Globalization.UnicodeCategory.Format
            or System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator;

    private static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("quantc — a quantization compiler for ONNX models");
        root.Subcommands.Add(InspectCommand.Build(stdout));
        root.Subcommands.Add(VerifyCommand.Build(stdout, stderr));
        root.Subcommands.Add(DiffCommand.Build(stdout));
        root.Subcommands.Add(CalibrateCommand.Build(stdout, stderr));
        root.Subcommands.Add(ModelsCommand.Build(stdout));
        root.Subcommands.Add(CompileCommand.Build(stdout, stderr));
        root.Subcommands.Add(RecipesCommand.Build(stdout));
        root.Subcommands.Add(GenerateCommand.Build(stdout));
        return root;
    }

    /// <summary>--force: replace existing files that quantc did not write (never an input, a device or a folder).</summary>
    internal static Option<bool> NoDocSplitOption() =>
        new("--no-doc-split") { Description = "read text as one token stream cut every --seq-len tokens, across blank-line document " +
            "boundaries (default: samples never span two documents)" };

    /// <summary>--no-bos: text samples without the tokenizer's BOS (for models that carry it themselves, e.g. a PrefixQuant
    /// prefix).</summary>
    internal static Option<bool> NoBosOption() =>
        new("--no-bos") { Description = "text samples without the tokenizer's BOS first (for a model whose built-in prefix starts with " +
            "it: prefix_tokens)" };

    internal static Option<bool> ForceOption() =>
        new("--force") { Description = "replace an existing output file even when it is not an earlier quantc output (inputs, devices " +
            "and folders are always refused)" };

    /// <summary>The bundled default model (models/tiny-llama.onnx), searched next to the program and up from the working folder.</summary>
    public static string DefaultModelPath() =>
        FindBundled("models/tiny-llama.onnx", "no model given and the bundled default (models/tiny-llama.onnx) was not found");

    /// <summary>The bundled held-out evaluation text (models/eval.txt).</summary>
    public static string DefaultEvalText() =>
        FindBundled("models/eval.txt", "no --data given and the bundled evaluation text (models/eval.txt) was not found");

    private static string FindBundled(string rel, string missing) => TryFindBundled(rel) ?? throw new BadInputException(missing);

    /// <summary>A bundled file (e.g. models/calib.txt), searched up from the program's folder and the working folder; null when
    /// absent.</summary>
    internal static string? TryFindBundled(string rel)
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, rel);
                if (File.Exists(p)) return p;
            }
        return null;
    }

    /// <summary>Loads a model, turning every kind of unreadable input (a negative input or output dimension included) into <see
    /// cref="BadInputException"/>.</summary>
    public static Model LoadModel(string path)
    {
        Model m;
        try { m = Model.Load(path); }
        catch (BadInputException) { throw; }
        catch (GraphValidationException e) { throw new BadInputException($"{path}: {e.Message}", e); }
        catch (OverflowException e) { throw new BadInputException($"{path}: a tensor's size overflows ({e.Message})", e); }
        foreach (var v in m.Graph.Inputs.Concat(m.Graph.Outputs))
            if (v.Shape?.FirstOrDefault(d => d < 0) is { } negative)
            {
                m.Dispose();
                throw new BadInputException($"{path}: {(v.IsGraphInput ? "input" : "output")} '{v.Name}' has a negative dimension " +
                    $"({negative})");
            }
        return m;
    }

    /// <summary>Refuses a model with a NaN or infinite floating-point weight: quantizing it could only give a broken model.</summary>
    public static void RequireFiniteWeights(Model m, string path)
    {
        foreach (var g in m.Graph.AllGraphs())
            foreach (var v in g.Initializers)
            {
                var t = v.Initializer!;
                long bad = t.DataType switch
                {
                    (int)DT.Float => IndexOfNonFinite(t.AsSpan<float>()),
                    (int)DT.Double => IndexOfNonFinite(t.AsSpan<double>()),
                    (int)DT.Float16 => IndexOfNonFinite(t.AsSpan<Half>()),
                    (int)DT.Bfloat16 => IndexOfNonFinite(t.AsSpan<ushort>(), b => (b & 0x7F80) == 0x7F80),
                    _ => -1,
                };
                t.DropPages();   // a scan of every weight would otherwise leave the whole model resident
                if (bad >= 0)
                    throw new BadInputException($"{path}: weight '{v.Name}' holds NaN or infinite values (element {bad} " +
                        $"of {t.ElementCount}); a model with them cannot be quantized");
            }
    }

    private static long IndexOfNonFinite<T>(ReadOnlySpan<T> s) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < s.Length; i++) if (!T.IsFinite(s[i])) return i;
        return -1;
    }

    private static long IndexOfNonFinite(ReadOnlySpan<ushort> s, Func<ushort, bool> nonFinite)
    {
        for (int i = 0; i < s.Length; i++) if (nonFinite(s[i])) return i;
        return -1;
    }
}
