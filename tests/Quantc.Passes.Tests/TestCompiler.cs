using Quantc.Core.Calibration;
using Quantc.Core.Compilation;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Ir;

namespace Quantc.Passes.Tests;

/// <summary>The tests' compile: the <see cref="Compiler"/> with the built-in passes.</summary>
internal static class TestCompiler
{
    /// <summary>The compiler with the built-in passes.</summary>
    public static Compiler Compiler => new(Builtins.Passes());

    /// <summary>A built-in recipe by name, else recipe YAML.</summary>
    public static Recipe RecipeOf(string recipe) =>
        Builtins.Recipes.ContainsKey(recipe) ? Builtins.Recipe(recipe) : Recipe.Parse(recipe, "test recipe");

    /// <summary>Compiles <paramref name="m"/> in place with <paramref name="recipe"/> (a built-in name or YAML) and the calibration samples, when given.</summary>
    public static CompileResult Compile(Model m, string recipe, IReadOnlyList<CalibrationSample>? calibration = null) =>
        Compiler.Compile(m, RecipeOf(recipe), new CompileOptions
        {
            Calibration = calibration is null ? null : new LoadedData(calibration, null, "test calibration", []),
        });

    /// <summary>The reference model <paramref name="arch"/> (tiny, torch flavor) saved under <paramref name="dir"/> and loaded from
    /// there.</summary>
    public static Model TinyReference(DirectoryInfo dir, string arch = "llama")
    {
        var path = Path.Combine(dir.FullName, $"{arch}-{Guid.NewGuid():N}.onnx");
        Quantc.Models.ReferenceModels.BuildAndSave(arch, "tiny", 0, "torch", path);
        return Model.Load(path);
    }

    /// <summary>Compiles <paramref name="m"/> in place, saves it under <paramref name="dir"/> and returns the saved model loaded again.</summary>
    public static Model CompileAndReload(DirectoryInfo dir, Model m, string recipe, IReadOnlyList<CalibrationSample>? calibration, out CompileResult result)
    {
        result = Compile(m, recipe, calibration);
        var path = Path.Combine(dir.FullName, $"compiled-{Guid.NewGuid():N}.onnx");
        m.Save(path);
        return Model.Load(path);
    }
}
