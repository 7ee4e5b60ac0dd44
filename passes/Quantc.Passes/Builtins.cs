using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>quantc's passes and built-in recipes.</summary>
public static class Builtins
{
    /// <summary>Every pass a recipe can name; each declares its name, kind, summary and options once, on the pass (its
    /// <c>Info</c>).</summary>
    public static PassRegistry Passes()
    {
        var r = new PassRegistry();
        foreach (var info in All) r.Register(info);
        return r;
    }

    private static readonly PassInfo[] All =
    [
        FoldNormPass.Info, SmoothPass.Info, SymmetrizePass.Info, OnlineHadamardPass.Info, RotateResidualPass.Info, RotateHeadPass.Info,
        RotateQkPass.Info, QuantizeKvPass.Info, QuantizePass.Info, SpikeMixedPass.Info, RangesPass.Info, WeightsPass.Info,
        LowerMatMulNBitsPass.Info, MambaRangesPass.Info, LowerMambaPass.Info, LowerQdqPass.Info, FuseAttentionPass.Info, FuseNormPass.Info,
        FuseProjectionsPass.Info, FuseRopePass.Info, LowerW4A8Pass.Info, LowerAttentionPass.Info,
        FireqWeightsPass.Info, LowerInt4Fp8Pass.Info, FireqScalePass.Info, FireqRopePass.Info,
        PrefixTokensPass.Info, ClipSearchPass.Info,
    ];

    /// <summary>The built-in recipes by name: the YAML files in Recipes/, embedded in this assembly.</summary>
    public static IReadOnlyDictionary<string, string> Recipes { get; } = LoadRecipes();

    private static SortedDictionary<string, string> LoadRecipes()
    {
        const string prefix = "recipes/";
        var asm = typeof(Builtins).Assembly;
        var d = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var res in asm.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal) &&
            n.EndsWith(".yaml", StringComparison.Ordinal)))
        {
            using var reader = new StreamReader(asm.GetManifestResourceStream(res)!);
            d[res[prefix.Length..^".yaml".Length]] = reader.ReadToEnd();
        }
        return d;
    }

    /// <summary>A built-in recipe by name, or a recipe file by path.</summary>
    public static Recipe Recipe(string nameOrPath)
    {
        if (Recipes.TryGetValue(nameOrPath, out var yaml)) return Core.Pipeline.Recipe.Parse(yaml, $"recipe {nameOrPath}");
        if (File.Exists(nameOrPath)) return Core.Pipeline.Recipe.Load(nameOrPath);
        throw new BadInputException($"unknown recipe '{nameOrPath}' (built in: {string.Join(", ", Recipes.Keys)}; or a YAML file)");
    }
}

/// <summary>The options of passes whose only choice is standard ONNX only.</summary>
public sealed record PortableOptions : PassOptions
{
    [Option("standard ONNX ops only (no ai.quantc kernels): MatMul by a constant Hadamard matrix, QDQ instead of fused integer kernels")]
    public bool Portable { get; init; }
}
