using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Quantc.Onnx;

namespace Quantc.Core.Pipeline;

/// <summary>
/// Declares one option of a pass on a property of its <see cref="PassOptions"/> record. The recipe
/// name is the property's name in snake_case (ThroughMlp → through_mlp); the property's initial
/// value is the default. The binder checks the type, the choices, the range and that numbers are
/// finite, so a pass never sees a value it did not declare.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class OptionAttribute(string doc) : Attribute
{
    /// <summary>One line for <c>quantc recipes</c> and the error messages.</summary>
    public string Doc { get; } = doc;

    /// <summary>The allowed values of a string option, separated by '|'.</summary>
    public string? Choices { get; init; }

    /// <summary>Smallest allowed number (inclusive unless <see cref="MinExclusive"/>).</summary>
    public double Min { get; init; } = double.NegativeInfinity;

    /// <summary>Largest allowed number (inclusive).</summary>
    public double Max { get; init; } = double.PositiveInfinity;

    /// <summary>The minimum itself is not allowed.</summary>
    public bool MinExclusive { get; init; }

    /// <summary>The string (or each string of a list) is a regular expression.</summary>
    public bool Regex { get; init; }
}

/// <summary>
/// A pass's options: a record whose <see cref="OptionAttribute"/> properties are bound from the
/// recipe by <see cref="PassOptions.Bind{T}"/>. Cross-option rules go in <see cref="Check"/>.
/// </summary>
public abstract record PassOptions
{
    private HashSet<string> _given = new(StringComparer.Ordinal);

    /// <summary>Whether the recipe gave option <paramref name="name"/> (snake_case) rather than leaving the default.</summary>
    public bool Given(string name) => _given.Contains(name);

    /// <summary>Rules between options; returns the problem (without the recipe location), or null.</summary>
    public virtual string? Check() => null;

    /// <summary>Binds <paramref name="p"/> onto a new <typeparamref name="T"/>; every problem is a <see cref="BadInputException"/> naming
    /// the recipe, pass and option.</summary>
    public static T Bind<T>(PassParameters p) where T : PassOptions, new()
    {
        var o = new T();
        var given = new HashSet<string>(StringComparer.Ordinal);
        foreach (var opt in OptionInfo.Of(typeof(T)))
        {
            if (!p.Has(opt.Name)) continue;
            object? value = opt.Read(p);
            if (value is null) continue;
            opt.Property.SetValue(o, value);
            given.Add(opt.Name);
        }
        p.EnsureAllUsed();
        o._given = given;
        if (o.Check() is { } problem) throw new BadInputException($"{p.Where}: {problem}");
        return o;
    }
}

/// <summary>A pass without options.</summary>
public sealed record NoOptions : PassOptions;

/// <summary>One declared option: its recipe name, property, declaration and default.</summary>
public sealed class OptionInfo
{
    private OptionInfo(PropertyInfo property, OptionAttribute attribute, object? defaultValue)
    {
        Property = property;
        Attribute = attribute;
        Default = defaultValue;
        Name = SnakeCase(property.Name);
    }

    public string Name { get; }
    public PropertyInfo Property { get; }
    public OptionAttribute Attribute { get; }
    public object? Default { get; }

    private static readonly Dictionary<Type, IReadOnlyList<OptionInfo>> Cache = [];

    /// <summary>The options <paramref name="optionsType"/> declares, in declaration order.</summary>
    public static IReadOnlyList<OptionInfo> Of(Type optionsType)
    {
        lock (Cache)
        {
            if (Cache.TryGetValue(optionsType, out var known)) return known;
            var defaults = Activator.CreateInstance(optionsType);
            var list = optionsType.GetProperties(BindingFlags.Public | BindingFlags.Instance)
                .Select(p => (p, a: p.GetCustomAttribute<OptionAttribute>()))
                .Where(x => x.a is not null)
                .OrderBy(x => x.p.MetadataToken)
                .Select(x => new OptionInfo(x.p, x.a!, x.p.GetValue(defaults)))
                .ToList();
            foreach (var o in list) o.CheckDeclaration();
            Cache[optionsType] = list;
            return list;
        }
    }

    /// <summary>ThroughMlp → through_mlp, XPercentile → x_percentile.</summary>
    public static string SnakeCase(string pascal)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < pascal.Length; i++)
        {
            bool wordStart = char.IsUpper(pascal[i]) && i > 0
                && (!char.IsUpper(pascal[i - 1]) || (i + 1 < pascal.Length && char.IsLower(pascal[i + 1])));
            if (wordStart) sb.Append('_');
            sb.Append(char.ToLowerInvariant(pascal[i]));
        }
        return sb.ToString();
    }

    private string[]? Choices => Attribute.Choices?.Split('|');

    private void CheckDeclaration()
    {
        var t = Property.PropertyType;
        if (t != typeof(bool) && t != typeof(int) && t != typeof(double) && t != typeof(string) && t != typeof(IReadOnlyList<string>) &&
            t != typeof(IReadOnlyList<double>))
            throw new InvalidOperationException($"option {Property.DeclaringType!.Name}.{Property.Name}: type {t.Name} is not supported");
        if (Choices is { } c && Default is string d && !c.Contains(d, StringComparer.Ordinal))
            throw new InvalidOperationException($"option {Name}: default '{d}' is not one of its choices");
    }

    /// <summary>Reads and checks the recipe's value.</summary>
    public object? Read(PassParameters p)
    {
        var t = Property.PropertyType;
        if (t == typeof(bool)) return p.GetBool(Name, (bool)Default!);
        if (t == typeof(int)) return (int)Number(p, p.GetInt(Name, (int)Default!));
        if (t == typeof(double)) return Number(p, p.GetDouble(Name, (double)Default!));
        if (t == typeof(string))
        {
            string s = Choices is { } c ? p.GetChoice(Name, (string)Default!, c) : p.GetString(Name, (string)Default!);
            if (Attribute.Regex) CheckRegex(p, s);
            return s;
        }
        var strings = p.GetStrings(Name);
        if (t == typeof(IReadOnlyList<string>))
        {
            foreach (var s in strings) if (Attribute.Regex) CheckRegex(p, s);
            return strings;
        }
        var numbers = new List<double>();
        foreach (var s in strings)
        {
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                throw new BadInputException($"{p.Where}: parameter '{Name}' has '{s}', not a number");
            numbers.Add(Number(p, v));
        }
        return numbers;
    }

    private double Number(PassParameters p, double v)
    {
        var a = Attribute;
        if (!double.IsFinite(v))
            throw new BadInputException($"{p.Where}: parameter '{Name}' = {v.ToString(CultureInfo.InvariantCulture)} is not a finite " +
            $"number");
        bool below = a.MinExclusive ? v <= a.Min : v < a.Min;
        if (below || v > a.Max)
            throw new BadInputException($"{p.Where}: parameter '{Name}' = {v.ToString(CultureInfo.InvariantCulture)} must " +
                $"be {RangeText()}");
        return v;
    }

    private void CheckRegex(PassParameters p, string s)
    {
        try { _ = new Regex(s, RegexOptions.None, TimeSpan.FromSeconds(1)); }
        catch (ArgumentException e) { throw new BadInputException($"{p.Where}: parameter '{Name}' = '{s}' is not a valid regular " +
            $"expression ({e.Message})"); }
    }

    private string RangeText()
    {
        var a = Attribute;
        string F(double x) => x.ToString(CultureInfo.InvariantCulture);
        if (double.IsNegativeInfinity(a.Min)) return $"at most {F(a.Max)}";
        if (double.IsPositiveInfinity(a.Max)) return a.MinExclusive ? $"greater than {F(a.Min)}" : $"at least {F(a.Min)}";
        return $"in {(a.MinExclusive ? "(" : "[")}{F(a.Min)}, {F(a.Max)}]";
    }

    /// <summary>One line: name, choices or type and range, default, doc.</summary>
    public override string ToString()
    {
        var t = Property.PropertyType;
        string kind = Choices is { } c ? string.Join("|", c)
            : t == typeof(bool) ? "true|false"
            : t == typeof(int) ? "integer" : t == typeof(double) ? "number"
            : t == typeof(string) ? (Attribute.Regex ? "regex" : "text")
            : t == typeof(IReadOnlyList<double>) ? "list of numbers" : Attribute.Regex ? "list of regexes" : "list";
        if ((t == typeof(int) || t == typeof(double) || t == typeof(IReadOnlyList<double>)) &&
            (double.IsFinite(Attribute.Min) || double.IsFinite(Attribute.Max)))
            kind += " " + RangeText();
        string def = Default switch
        {
            null => "",
            bool b => b ? "true" : "false",
            IReadOnlyList<string> { Count: 0 } or IReadOnlyList<double> { Count: 0 } => "",
            IReadOnlyList<string> l => string.Join(", ", l),
            IReadOnlyList<double> l => string.Join(", ", l.Select(x => x.ToString(CultureInfo.InvariantCulture))),
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            var x => x.ToString() ?? "",
        };
        return $"{Name} ({kind}{(def.Length > 0 ? $", default {def}" : "")}): {Attribute.Doc}";
    }
}
