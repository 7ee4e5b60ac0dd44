using System.Globalization;
using Quantc.Core.Compilation;
using Quantc.Core.Pipeline;
using Quantc.Core.Verification;

namespace Quantc.Passes;

/// <summary>
/// What accuracy a recipe is expected to keep, whether a verified compile is far from it, and — when it is — which
/// part of the recipe costs most (<see cref="Attribute"/>).
/// </summary>
/// <remarks>
/// A recipe states its expectation with <c>expect:</c>; otherwise it follows from the narrowest format the recipe
/// uses (weights, activations or KV cache): 8 bits and wider +3 % perplexity / 20 dB, 6 bits +8 % / 14 dB, 4 bits
/// +15 % / 10 dB — about the costs these formats have in the methods' papers; on the trained LLaMA of bench/RESULTS.md
/// every built-in transformer recipe stays within twice them but prefixquant-w4a4kv4 (+40 %). "Far" is more than twice the
/// expected perplexity rise, or an SQNR more than 6 dB (four times the noise power) below the expected one.
/// </remarks>
public static class Expectations
{
    /// <summary>A perplexity rise this many times the expected one is far above the expectation.</summary>
    public const double FarFactor = 2;

    /// <summary>An SQNR this many dB below the expected one is far below the expectation.</summary>
    public const double FarDb = 6;

    /// <summary>The recipe's <c>expect:</c>, or the expectation of its narrowest format.</summary>
    public static RecipeExpectation Of(Recipe recipe)
    {
        if (recipe.Expect is { } e) return e;
        var (bits, what) = Narrowest(recipe);
        var (ppl, db) = bits >= 8 ? (0.03, 20.0) : bits >= 6 ? (0.08, 14.0) : (0.15, 10.0);
        return new RecipeExpectation(ppl, db, what is null ? "a recipe without reduced formats" : $"its narrowest format, {what}");
    }

    /// <summary>The output whose error the expectation is about: the logits, else the first output.</summary>
    public static OutputError MainOutput(VerifyReport v) => v.Outputs.FirstOrDefault(o => o.Name == "logits") ?? v.Outputs[0];

    /// <summary>
    /// The verified error as one number, larger is worse: the relative perplexity rise (<paramref name="perplexity"/>), else the
    /// main output's noise-to-signal power ratio.
    /// </summary>
    public static double Cost(VerifyReport v, bool perplexity) =>
        perplexity && v.Logits is { ScoredTokens: > 0 } l && l.OriginalPerplexity > 0
            ? l.CompiledPerplexity / l.OriginalPerplexity - 1
            : Math.Pow(10, -MainOutput(v).SqnrDb / 10);

    /// <summary>
    /// When <paramref name="v"/> is far worse than <paramref name="recipe"/>'s expectation — in perplexity (when next-token logits were
    /// scored) or in the main output's SQNR — one line saying so, and whether perplexity is the measure missed; else null.
    /// </summary>
    public static ExpectationMiss? Miss(Recipe recipe, VerifyReport v)
    {
        var e = Of(recipe);
        if (v.Logits is { ScoredTokens: > 0 } l && double.IsFinite(l.OriginalPerplexity) && double.IsFinite(l.CompiledPerplexity))
        {
            double rise = l.CompiledPerplexity / l.OriginalPerplexity - 1;
            if (rise > FarFactor * e.PerplexityIncrease)
                return new ExpectationMiss(string.Create(CultureInfo.InvariantCulture,
                    $"perplexity {l.OriginalPerplexity:0.000} → {l.CompiledPerplexity:0.000} ({Rise(rise)}), far above what recipe " +
                    $"{recipe.Name} is expected to cost: {Rise(e.PerplexityIncrease)} ({e.Basis}; warned beyond " +
                    $"{Rise(FarFactor * e.PerplexityIncrease)})"), true);
        }
        var o = MainOutput(v);
        if (!(o.SqnrDb < e.SqnrDb - FarDb)) return null;
        return new ExpectationMiss(string.Create(CultureInfo.InvariantCulture,
            $"output '{o.Name}' SQNR {o.SqnrDb:0.0} dB, far below what recipe {recipe.Name} is expected to keep: {e.SqnrDb:0.#} dB " +
            $"({e.Basis}; warned below {e.SqnrDb - FarDb:0.#} dB)"), false);
    }

    /// <summary>
    /// Where a compile's error comes from: the recipe compiled again cumulatively — its float rewrites alone (rotations,
    /// smoothing, a prefix: whatever it does besides quantizing), then with its weights (activations and cache in float),
    /// then with its activations (cache in float) — and verified on the same data, so that the rewrites', the weights',
    /// the activations' and the KV cache's shares of <paramref name="full"/>'s error can be told apart. One line; parts
    /// that cannot be separated for this recipe (no activation or cache quantization, or a variant the recipe's passes
    /// refuse) are said so.
    /// </summary>
    public static string Attribute(Recipe recipe, string input, CompileOptions options, VerifyReport full, int loweredLayers,
        bool perplexity)
    {
        bool ppl = perplexity;
        double fullCost = Cost(full, ppl);
        var noCache = WithoutCache(recipe);
        bool activations = ActivationsOf(recipe) is not null;
        // The cumulative chain: each stage adds one part; a stage that cannot be compiled merges its part into the next.
        var stages = new List<(string Part, Recipe? Variant, string? Why)>();
        if (FloatRewrites(recipe) is var (rewrites, names)) stages.Add(($"float rewrites ({names})", rewrites, null));
        if (activations)
        {
            var (w, why) = WeightsOnly(noCache ?? recipe);
            stages.Add(("weights", w, why));
        }
        if (noCache is not null) stages.Add((activations ? "activations" : "weights", noCache, null));
        if (stages.Count == 0) return $"the error is the weights' alone (recipe {recipe.Name} keeps activations and cache in float)";
        string lastPart = noCache is not null ? "KV cache" : activations ? "activations" : "weights";
        var measured = new List<(string Part, double Cost)>();
        var notes = new List<string>();
        using var dir = new TempFolder();
        double previous = 0;
        string pending = "";
        foreach (var (part, variant, why) in stages)
        {
            string label = pending + part;
            string? skipped = why;
            if (variant is not null)
            {
                try
                {
                    using var r = new Compiler(Builtins.Passes()).Compile(input, variant, options with
                    {
                        OutputPath = Path.Combine(dir.Path, $"{measured.Count}.onnx"), OutputName = null, Stages = SilentStages.Instance,
                    });
                    int lowered = r.Context.Plan.Layers.Count(p => p.LoweredBy is not null);
                    if (r.Verify is null) skipped = "its variant was not verified";
                    else if (lowered != loweredLayers && lowered != 0)
                        skipped = $"its variant quantized {lowered} layers, the recipe {loweredLayers}";
                    else
                    {
                        double c = Cost(r.Verify, ppl);
                        measured.Add((label, c - previous));
                        previous = c;
                        pending = "";
                        continue;
                    }
                }
                catch (Quantc.Onnx.BadInputException e)
                {
                    skipped = $"the recipe's passes refuse the variant: {e.Message}";
                }
            }
            notes.Add($"{part} not separated ({skipped})");
            pending = label + " and ";
        }
        measured.Add((pending + lastPart, fullCost - previous));
        var top = measured.MaxBy(m => m.Cost);
        string parts = string.Join(", ", measured.Select(m => $"{m.Part} {Figure(m.Cost, ppl, fullCost)}"));
        string tail = notes.Count == 0 ? "" : $"; {string.Join("; ", notes)}";
        string measure = ppl ? "perplexity rise" : $"share of the noise power in '{MainOutput(full).Name}'";
        string noun = top.Part.Split(" (")[0];
        string verb = noun.EndsWith('s') ? "cost" : "costs";
        return $"the error by part of the recipe ({measure}, each part added in turn): {parts}: the {noun} {verb} most{tail}";
    }

    private static string Figure(double c, bool ppl, double total) =>
        ppl ? Rise(c) : string.Create(CultureInfo.InvariantCulture, $"{(total > 0 ? 100 * c / total : 0):0} %");

    private static string Rise(double r)
    {
        double pct = Math.Round(r * 100, 1);
        return string.Create(CultureInfo.InvariantCulture, $"{(pct >= 0 ? "+" : "−")}{Math.Abs(pct):0.#} %");
    }

    /// <summary>The passes that quantize (decide formats, ranges or rounding, or lower them), left out of the float-rewrites
    /// variant.</summary>
    private static readonly string[] Quantizing =
        ["quantize", "spike_mixed", "weights", "fireq_weights", "lower_int4fp8", "lower_w4a8", "lower_matmulnbits", "lower_mamba",
            "lower_qdq", "ranges", "mamba_ranges", "clip_search", "quantize_kv"];

    /// <summary>The recipe's float rewrites alone (rotations, smoothing, prefix: every step but the quantizing ones), with their names;
    /// null when it has none but fusions.</summary>
    private static (Recipe Recipe, string Names)? FloatRewrites(Recipe r)
    {
        var steps = r.Steps.Where(s => !Quantizing.Contains(s.Pass)).ToList();
        var names = steps.Select(s => s.Pass).Where(p => !p.StartsWith("fuse_", StringComparison.Ordinal)).Distinct().ToList();
        if (names.Count == 0) return null;
        return (r with { Name = $"{r.Name} (float rewrites)", Steps = steps }, string.Join(", ", names));
    }

    /// <summary>The cache-quantizing passes a variant leaves out.</summary>
    private static readonly string[] CachePasses = ["quantize_kv"];

    /// <summary>The passes that lower layers to a kernel of their formats, replaced by lower_qdq in the weights-only variant.</summary>
    private static readonly string[] LayerLowerings = ["lower_w4a8", "lower_int4fp8", "lower_matmulnbits", "lower_mamba", "lower_qdq"];

    /// <summary>The passes that only choose activation ranges, left out of the weights-only variant.</summary>
    private static readonly string[] RangePasses = ["ranges", "mamba_ranges", "clip_search"];

    /// <summary>The recipe without its cache quantization, or null when it has none.</summary>
    private static Recipe? WithoutCache(Recipe r)
    {
        if (!r.Steps.Any(s => CachePasses.Contains(s.Pass))) return null;
        return r with { Name = $"{r.Name} (cache in float)", Steps = [.. r.Steps.Where(s => !CachePasses.Contains(s.Pass))] };
    }

    /// <summary>The quantize step's activation format when it quantizes activations (or lower_int4fp8's float8), else null.</summary>
    private static string? ActivationsOf(Recipe r)
    {
        if (r.Steps.Any(s => s.Pass == "lower_int4fp8")) return "fp8";
        var q = r.Steps.FirstOrDefault(s => s.Pass == "quantize");
        if (q is null) return null;
        string a = q.Parameters.Values.GetValueOrDefault("activations") as string ?? "int8";
        return a == "fp32" ? null : a;
    }

    /// <summary>The recipe with float activations and cache: its quantize step weight-only, range passes left out, its layers
    /// lowered by lower_qdq (weights dequantized into float MatMuls); null with the reason when that is not this recipe.</summary>
    private static (Recipe? Recipe, string? Why) WeightsOnly(Recipe r)
    {
        int q = r.Steps.ToList().FindIndex(s => s.Pass == "quantize");
        if (q < 0) return (null, "no quantize step whose activations could be kept in float");
        var steps = new List<RecipeStep>();
        bool lowered = false;
        foreach (var (s, i) in r.Steps.Select((s, i) => (s, i)))
        {
            if (RangePasses.Contains(s.Pass)) continue;
            if (i == q)
            {
                var values = new Dictionary<string, object?>(s.Parameters.Values, StringComparer.Ordinal) { ["activations"] = "fp32" };
                values.Remove("mode");
                values.Remove("dynamic");
                steps.Add(new RecipeStep(s.Pass, new PassParameters(values, s.Parameters.Where)));
            }
            else if (LayerLowerings.Contains(s.Pass))
            {
                if (!lowered) steps.Add(new RecipeStep("lower_qdq", new PassParameters(null, s.Parameters.Where)));
                lowered = true;
            }
            else steps.Add(s);
        }
        if (!lowered) return (null, "the recipe has no layer lowering to replace");
        return (r with { Name = $"{r.Name} (weights only)", Steps = steps }, null);
    }

    /// <summary>The narrowest format among the recipe's weights, activations and cache (bits, and a phrase naming it).</summary>
    private static (int Bits, string? What) Narrowest(Recipe r)
    {
        var found = new List<(int Bits, string What)>();
        foreach (var s in r.Steps)
        {
            var v = s.Parameters.Values;
            switch (s.Pass)
            {
                case "quantize":
                    string w = v.GetValueOrDefault("weights") as string ?? "int8";
                    found.Add((Bits(w), $"{w} weights"));
                    string a = v.GetValueOrDefault("activations") as string ?? "int8";
                    if (a != "fp32") found.Add((Bits(a), $"{a} activations"));
                    break;
                case "fireq_weights":
                    found.Add((4, "int4 weights"));
                    break;
                case "lower_int4fp8":
                    found.Add((8, "fp8 activations"));
                    break;
                case "quantize_kv":
                    int b = v.GetValueOrDefault("format") is string f && f != "int" ? 8
                        : v.GetValueOrDefault("bits") is long l ? (int)l : 4;
                    found.Add((b, $"{b}-bit KV cache"));
                    break;
            }
        }
        return found.Count == 0 ? (16, null) : found.MinBy(f => f.Bits);
    }

    private static int Bits(string format) => format switch
    {
        "int4" => 4,
        "int6" => 6,
        "int8" or "uint8" or "fp8" => 8,
        _ => 16,
    };

    /// <summary>A temporary folder deleted with everything in it.</summary>
    private sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("quantc-attribution").FullName;

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }
}

/// <summary>A verified compile far from its recipe's expectation: the line that says so, and whether the measure missed is the
/// perplexity (else the main output's SQNR).</summary>
public sealed record ExpectationMiss(string Text, bool Perplexity);
