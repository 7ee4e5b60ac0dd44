using Quantc.Core.IO;
using Quantc.Core.Reports;

namespace Quantc.Cli;

/// <summary><c>compile --charts DIR</c>: the report's charts as SVG files, declared in the command's <see cref="OutputSet"/> before
/// any work and written after the compile.</summary>
internal sealed class ChartFiles
{
    private readonly Dictionary<string, string> _staged;

    private ChartFiles(string dir, Dictionary<string, string> staged)
    {
        Folder = Path.GetFullPath(dir);
        _staged = staged;
    }

    public string Folder { get; }

    /// <summary>Declares <c>DIR/NAME.svg</c> for each of <see cref="CompileCharts.Names"/>.</summary>
    public static ChartFiles Plan(string dir, OutputSet outputs) =>
        new(dir, CompileCharts.Names.ToDictionary(n => n, n => outputs.Add("--charts", Path.Combine(dir, n + ".svg"), OutputKind.Chart),
            StringComparer.Ordinal));

    /// <summary>Writes every chart into its staged file.</summary>
    public void Write(IReadOnlyList<ReportChart> charts)
    {
        if (charts.Count != _staged.Count || charts.Any(c => !_staged.ContainsKey(c.Name)))
            throw new InvalidOperationException($"the compile drew charts {string.Join(", ", charts.Select(c => c.Name))}, not the " +
                $"declared {string.Join(", ", _staged.Keys)}");
        foreach (var c in charts) File.WriteAllText(_staged[c.Name], c.Svg, new System.Text.UTF8Encoding(false));
    }
}
