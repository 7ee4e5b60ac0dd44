using System.CommandLine;
using Quantc.Core.Pipeline;
using Quantc.Passes;

namespace Quantc.Cli;

/// <summary><c>quantc recipes</c>: the built-in recipes with their passes, and every pass.</summary>
internal static class RecipesCommand
{
    public static Command Build(TextWriter stdout)
    {
        var cmd = new Command("recipes", "list the built-in recipes and their passes");
        cmd.SetAction(_ =>
        {
            foreach (var name in Builtins.Recipes.Keys)
            {
                var r = Builtins.Recipe(name);
                stdout.WriteLine($"{r.Name}: {r.Description}");
                foreach (var s in r.Steps)
                {
                    var ps = string.Join(", ", s.Parameters.Values.Select(kv => $"{kv.Key}: {Format(kv.Value)}"));
                    stdout.WriteLine($"    - {s.Pass}{(ps.Length > 0 ? $" {{ {ps} }}" : "")}");
                }
            }
            stdout.WriteLine();
            stdout.WriteLine("passes:");
            foreach (var p in Builtins.Passes().All)
            {
                stdout.WriteLine($"  {p.Name,-17} {KindName(p.Kind),-20} {p.Description}");
                foreach (var o in p.Options) stdout.WriteLine($"      {o}");
            }
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private static string KindName(PassKind k) => k switch
    {
        PassKind.FunctionPreserving => "function-preserving",
        PassKind.Decision => "decision",
        _ => "lowering",
    };

    private static string Format(object? v) => v switch
    {
        IEnumerable<object?> list when v is not string => "[" + string.Join(", ", list) + "]",
        double d => d.ToString(System.Globalization.CultureInfo.InvariantCulture),
        _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "",
    };
}
