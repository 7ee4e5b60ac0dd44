using Quantc.Onnx;
using YamlDotNet.RepresentationModel;

namespace Quantc.Core.Pipeline;

/// <summary>
/// The accuracy a recipe is expected to keep, as measured by verification: the output perplexity at most
/// <paramref name="PerplexityIncrease"/> above the original's (0.05 = 5 %), and for models without next-token logits every output's
/// SQNR at least <paramref name="SqnrDb"/>. <paramref name="Basis"/> says where the figures come from (the recipe's
/// <c>expect:</c>, or the bit widths it uses).
/// </summary>
public sealed record RecipeExpectation(double PerplexityIncrease, double SqnrDb, string Basis);

/// <summary>One step of a recipe: a pass name and its parameters.</summary>
public sealed record RecipeStep(string Pass, PassParameters Parameters);

/// <summary>
/// A recipe: an ordered list of passes with parameters, written in YAML as llm-compressor's recipes
/// are, so that it reads like the method section of the paper:
/// <code>
/// name: smoothquant
/// description: SmoothQuant W8A8
/// passes:
///   - fold_norm
///   - smooth: { alpha: 0.5 }
///   - ranges: { method: minmax }
/// </code>
/// </summary>
public sealed record Recipe(string Name, string Description, IReadOnlyList<RecipeStep> Steps, string Source)
{
    /// <summary>The recipe's own <c>expect: { perplexity_increase: 0.1, sqnr_db: 15 }</c>, when it states one.</summary>
    public RecipeExpectation? Expect { get; init; }

    /// <summary>Parses recipe YAML; <paramref name="source"/> names it in messages.</summary>
    public static Recipe Parse(string yaml, string source)
    {
        CheckBounds(yaml, source);
        var stream = new YamlStream();
        try { stream.Load(new StringReader(yaml)); }
        catch (Exception e) when (e is YamlDotNet.Core.YamlException or InvalidOperationException or ArgumentException)
        {
            throw new BadInputException($"{source}: not valid YAML ({e.Message})", e);
        }
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new BadInputException($"{source}: a recipe is one YAML mapping with name, description and passes");
        string name = Scalar(root, "name", source) ?? Path.GetFileNameWithoutExtension(source);
        string description = Scalar(root, "description", source) ?? "";
        foreach (var key in root.Children.Keys.Select(k => Key(k, source)))
            if (key is not ("name" or "description" or "passes" or "expect"))
                throw new BadInputException($"{source}: unknown recipe key '{key}' (name, description, passes, expect)");
        if (!root.Children.TryGetValue(new YamlScalarNode("passes"), out var passesNode) || passesNode is not YamlSequenceNode passes)
            throw new BadInputException($"{source}: the recipe has no 'passes' list");
        var steps = new List<RecipeStep>();
        int i = 0;
        foreach (var item in passes)
        {
            i++;
            switch (item)
            {
                case YamlScalarNode s when !string.IsNullOrEmpty(s.Value):
                    steps.Add(new RecipeStep(s.Value, new PassParameters(null, $"{source}: pass {i} ({s.Value})")));
                    break;
                case YamlMappingNode m when m.Children.Count == 1:
                {
                    var (k, v) = m.Children.First();
                    string pass = Key(k, source);
                    var values = v switch
                    {
                        YamlMappingNode pm => Map(pm, $"{source}: pass {i} ({pass})"),
                        YamlScalarNode { Value: null or "" or "~" or "null" } => new Dictionary<string, object?>(),
                        _ => throw new BadInputException($"{source}: pass {i} ({pass}): parameters must be a mapping"),
                    };
                    steps.Add(new RecipeStep(pass, new PassParameters(values, $"{source}: pass {i} ({pass})")));
                    break;
                }
                default:
                    throw new BadInputException($"{source}: pass {i} must be a pass name or 'name: {{parameters}}'");
            }
        }
        if (steps.Count == 0) throw new BadInputException($"{source}: the recipe has no passes");
        return new Recipe(name, description, steps, source) { Expect = Expectation(root, source) };
    }

    /// <summary>The <c>expect:</c> mapping (perplexity_increase as a share, sqnr_db), or null without one.</summary>
    private static RecipeExpectation? Expectation(YamlMappingNode root, string source)
    {
        if (!root.Children.TryGetValue(new YamlScalarNode("expect"), out var node)) return null;
        if (node is not YamlMappingNode m)
            throw new BadInputException($"{source}: 'expect' must be a mapping (perplexity_increase, sqnr_db)");
        var values = Map(m, $"{source}: expect");
        foreach (var k in values.Keys)
            if (k is not ("perplexity_increase" or "sqnr_db"))
                throw new BadInputException($"{source}: expect: unknown key '{k}' (perplexity_increase, sqnr_db)");
        double Get(string key, double fallback, double min, double max) => values.GetValueOrDefault(key) switch
        {
            null when !values.ContainsKey(key) => fallback,
            long l when l >= min && l <= max => l,
            double d when d >= min && d <= max => d,
            var v => throw new BadInputException(
                $"{source}: expect: {key} must be a number in [{min}, {max}], not '{v}'"),
        };
        return new RecipeExpectation(Get("perplexity_increase", double.PositiveInfinity, 0, 100), Get("sqnr_db", 0, 0, 200),
            "the recipe's expect:");
    }

    /// <summary>Reads a recipe file.</summary>
    public static Recipe Load(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: recipe file not found");
        return Parse(File.ReadAllText(path), path);
    }

    private static string? Scalar(YamlMappingNode m, string key, string source)
    {
        if (!m.Children.TryGetValue(new YamlScalarNode(key), out var n)) return null;
        return n is YamlScalarNode s ? s.Value : throw new BadInputException($"{source}: '{key}' must be a string");
    }

    private static object? Convert(YamlNode n) => n switch
    {
        YamlScalarNode s when s.Style is YamlDotNet.Core.ScalarStyle.SingleQuoted or YamlDotNet.Core.ScalarStyle.DoubleQuoted => s.Value,
        YamlScalarNode { Value: null or "~" or "null" } => null,
        YamlScalarNode { Value: "true" or "True" } => true,
        YamlScalarNode { Value: "false" or "False" } => false,
        YamlScalarNode { Value: ".nan" or ".NaN" or ".NAN" } => double.NaN,
        YamlScalarNode { Value: ".inf" or ".Inf" or ".INF" or "+.inf" or "+.Inf" or "+.INF" } => double.PositiveInfinity,
        YamlScalarNode { Value: "-.inf" or "-.Inf" or "-.INF" } => double.NegativeInfinity,
        YamlScalarNode s when long.TryParse(s.Value, System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out long l) => l,
        YamlScalarNode s when double.TryParse(s.Value, System.Globalization.NumberStyles.Float,
            System.Globalization.CultureInfo.InvariantCulture, out double d) => d,
        YamlScalarNode s => s.Value,
        YamlSequenceNode seq => seq.Children.Select(Convert).ToList(),
        YamlMappingNode map => (IReadOnlyDictionary<string, object?>)Map(map, "recipe"),
        _ => null,
    };

    /// <summary>A mapping with scalar keys, each given once.</summary>
    private static Dictionary<string, object?> Map(YamlMappingNode m, string where)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in m.Children)
            if (!d.TryAdd(Key(k, where), Convert(v))) throw new BadInputException($"{where}: key '{Key(k, where)}' is given twice");
        return d;
    }

    private static string Key(YamlNode k, string where) =>
        k is YamlScalarNode { Value: { } v } ? v
            : throw new BadInputException($"{where}: a key must be a plain name, not " +
                $"a {(k is YamlMappingNode ? "mapping" : k is YamlSequenceNode ? "list" : "null")}");

    /// <summary>Largest recipe accepted (bytes).</summary>
    public const int MaxBytes = 1 << 20;

    /// <summary>Deepest nesting of lists and mappings accepted (recipes need four).</summary>
    public const int MaxDepth = 32;

    /// <summary>
    /// Reads the YAML as events before anything is built from it: a recipe is small and shallow and
    /// has no aliases, so size, depth and aliases are refused here (a billion-laughs recipe would
    /// otherwise expand without bound, and a deeply nested one exhaust the stack).
    /// </summary>
    private static void CheckBounds(string yaml, string source)
    {
        if (yaml.Length > MaxBytes)
            throw new BadInputException($"{source}: {yaml.Length} characters; a recipe may have at most {MaxBytes}");
        var parser = new YamlDotNet.Core.Parser(new StringReader(yaml));
        int depth = 0;
        try
        {
            while (parser.MoveNext())
            {
                switch (parser.Current)
                {
                    case YamlDotNet.Core.Events.AnchorAlias a:
                        throw new BadInputException($"{source}: line {a.Start.Line}: YAML aliases (*{a.Value}) are not allowed in recipes");
                    case YamlDotNet.Core.Events.MappingStart or YamlDotNet.Core.Events.SequenceStart:
                        if (++depth > MaxDepth)
                            throw new BadInputException($"{source}: line {parser.Current.Start.Line}: nested more than {MaxDepth} levels " +
                                $"deep");
                        break;
                    case YamlDotNet.Core.Events.MappingEnd or YamlDotNet.Core.Events.SequenceEnd:
                        depth--;
                        break;
                }
            }
        }
        catch (Exception e) when (e is YamlDotNet.Core.YamlException or InvalidOperationException or ArgumentException)
        {
            throw new BadInputException($"{source}: not valid YAML ({e.Message})", e);
        }
    }
}
