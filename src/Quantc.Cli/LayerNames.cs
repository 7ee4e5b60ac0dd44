using System.Text.RegularExpressions;

namespace Quantc.Cli;

/// <summary>Layer names listed on one screen line: names that differ only in their layer index folded
/// ("model.layers.[0-4].mlp.down_proj").</summary>
internal static partial class LayerNames
{
    /// <summary>The names folded by layer index, at most <paramref name="max"/> entries then "… (+N more)".</summary>
    public static string Shorten(IEnumerable<string> names, int max = 6)
    {
        var folded = new List<string>();
        foreach (var group in names.GroupBy(n => Index().Replace(n, ".#.", 1)))
        {
            var indices = group.Select(n => Index().Match(n) is { Success: true } m
                ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : -1).ToList();
            if (group.Count() == 1 || indices.Contains(-1)) { folded.AddRange(group); continue; }
            folded.Add(group.Key.Replace(".#.", $".[{Ranges(indices)}].", StringComparison.Ordinal));
        }
        return folded.Count <= max ? string.Join(", ", folded) : string.Join(", ", folded.Take(max)) + $", … (+{folded.Count - max} more)";
    }

    /// <summary>Sorted indices as ranges: 0-4,7.</summary>
    private static string Ranges(IEnumerable<int> indices)
    {
        var s = indices.Distinct().Order().ToList();
        var parts = new List<string>();
        for (int i = 0; i < s.Count;)
        {
            int j = i;
            while (j + 1 < s.Count && s[j + 1] == s[j] + 1) j++;
            parts.Add(j == i ? $"{s[i]}" : $"{s[i]}-{s[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }

    [GeneratedRegex(@"\.(\d+)\.")]
    private static partial Regex Index();
}
