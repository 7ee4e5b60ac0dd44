using System.Globalization;
using Quantc.Onnx;

namespace Quantc.Core.Pipeline;

/// <summary>
/// The parameters a recipe gives one pass. Passes read them through typed getters with defaults;
/// afterwards <see cref="EnsureAllUsed"/> rejects any parameter the pass does not know, so a typo
/// in a recipe is a clear error rather than a silently ignored setting.
/// </summary>
public sealed class PassParameters
{
    private readonly Dictionary<string, object?> _values;
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public PassParameters(IReadOnlyDictionary<string, object?>? values = null, string where = "")
    {
        _values = values is null ? new(StringComparer.Ordinal) : new(values, StringComparer.Ordinal);
        Where = where;
    }

    /// <summary>Where these parameters came from (recipe file and pass), for messages.</summary>
    public string Where { get; }

    /// <summary>All parameters as given.</summary>
    public IReadOnlyDictionary<string, object?> Values => _values;

    private BadInputException Bad(string name, object? v, string expected) =>
        new($"{Where}: parameter '{name}' = '{v}' is not {expected}");

    public bool Has(string name) { _used.Add(name); return _values.ContainsKey(name); }

    public double GetDouble(string name, double fallback)
    {
        _used.Add(name);
        if (!_values.TryGetValue(name, out var v) || v is null) return fallback;
        return v switch
        {
            double d => d,
            long l => l,
            int i => i,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            _ => throw Bad(name, v, "a number"),
        };
    }

    public int GetInt(string name, int fallback)
    {
        double d = GetDouble(name, fallback);
        if (d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue) throw Bad(name, d, "a whole number");
        return (int)d;
    }

    public bool GetBool(string name, bool fallback)
    {
        _used.Add(name);
        if (!_values.TryGetValue(name, out var v) || v is null) return fallback;
        return v switch
        {
            bool b => b,
            string s when bool.TryParse(s, out var b) => b,
            _ => throw Bad(name, v, "true or false"),
        };
    }

    public string GetString(string name, string fallback)
    {
        _used.Add(name);
        if (!_values.TryGetValue(name, out var v) || v is null) return fallback;
        return v switch
        {
            string s => s,
            double or long or int or bool => Convert.ToString(v, CultureInfo.InvariantCulture)!,
            _ => throw Bad(name, v, "a string"),
        };
    }

    /// <summary>A string restricted to <paramref name="allowed"/> (YAML's booleans match the choices "true" and "false").</summary>
    public string GetChoice(string name, string fallback, params string[] allowed)
    {
        string s = GetString(name, fallback);
        if (s is "True" or "False" && allowed.Contains(s.ToLowerInvariant(), StringComparer.Ordinal)) return s.ToLowerInvariant();
        if (!allowed.Contains(s, StringComparer.Ordinal))
            throw new BadInputException($"{Where}: parameter '{name}' = '{s}' must be one of {string.Join(", ", allowed)}");
        return s;
    }

    public IReadOnlyList<string> GetStrings(string name)
    {
        _used.Add(name);
        if (!_values.TryGetValue(name, out var v) || v is null) return [];
        return v switch
        {
            string s => [s],
            IEnumerable<object?> list => list.Select(x => Convert.ToString(x, CultureInfo.InvariantCulture) ?? "").ToList(),
            _ => throw Bad(name, v, "a list of strings"),
        };
    }

    /// <summary>Throws for parameters the pass never asked for.</summary>
    public void EnsureAllUsed(IEnumerable<string>? alsoKnown = null)
    {
        var known = new HashSet<string>(_used, StringComparer.Ordinal);
        if (alsoKnown is not null) known.UnionWith(alsoKnown);
        var unknown = _values.Keys.Where(k => !known.Contains(k)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
            throw new BadInputException($"{Where}: unknown " +
                $"parameter{(unknown.Count > 1 ? "s" : "")} {string.Join(", ", unknown.Select(u => $"'{u}'"))} " +
                $"(known: {string.Join(", ", known.Order(StringComparer.Ordinal))})");
    }
}
