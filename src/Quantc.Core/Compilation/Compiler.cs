using Quantc.Core.Calibration;
using Quantc.Core.Data;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Core.Verification;
using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Core.Compilation;

/// <summary>
/// Runs a piece of work that reports progress, under a label ("compiling (w8a8)", "verifying"): the CLI draws a
/// progress bar; a library caller may log, or (the default) just run it.
/// </summary>
public interface IStageRunner
{
    T Run<T>(string label, Func<IProgress<(int Done, int Total)>?, T> work);
}

/// <summary>Runs each stage without reporting progress.</summary>
public sealed class SilentStages : IStageRunner
{
    public static SilentStages Instance { get; } = new();

    public T Run<T>(string label, Func<IProgress<(int Done, int Total)>?, T> work) => work(null);
}

/// <summary>What a compile is given besides the model and the recipe.</summary>
public sealed record CompileOptions
{
    /// <summary>How calibration runs in ONNX Runtime (e.g. <see cref="CalibrationOptions.SegmentBytes"/>); the defaults when null.
    /// </summary>
    public CalibrationOptions? CalibrationRun { get; init; }

    /// <summary>Calibration data (its warnings go into the report); null when the recipe needs none or <see cref="SavedStatistics"/> answer
    /// it.</summary>
    public LoadedData? Calibration { get; init; }

    /// <summary>Statistics from an earlier <c>quantc calibrate</c> of the same model (valid until a pass rewrites the graph).</summary>
    public IReadOnlyDictionary<string, TensorStats>? SavedStatistics { get; init; }

    /// <summary>
    /// Where to write the compiled model; the written file is then opened in ONNX Runtime and a model it does not load
    /// is an error. Null: the model is compiled in memory only (and cannot be verified).
    /// </summary>
    public string? OutputPath { get; init; }

    /// <summary>Held-out data: when given (with <see cref="OutputPath"/>), the written model is verified against the original on
    /// it.</summary>
    public LoadedData? HeldOut { get; init; }

    /// <summary>
    /// The original model's file, loaded again for the verification (the compiled model is the loaded one, rewritten);
    /// default: the file the model was loaded from.
    /// </summary>
    public string? OriginalPath { get; init; }

    /// <summary>The model's name in the report (default: <see cref="OriginalPath"/>).</summary>
    public string? InputName { get; init; }

    /// <summary>The output's name in the report (default: the full path of <see cref="OutputPath"/>).</summary>
    public string? OutputName { get; init; }

    /// <summary>Runs the compile and verification stages (progress display); default: silently.</summary>
    public IStageRunner Stages { get; init; } = SilentStages.Instance;

    /// <summary>
    /// Times the compile's stages (import, passes, write, ONNX Runtime load check, verify), after any the caller timed before
    /// (reading the model, the data); default: a new clock. <see cref="CompileResult.Clock"/> is this clock.
    /// </summary>
    public Diagnostics.StageClock? Clock { get; init; }
}

/// <summary>
/// A compiled model (<paramref name="Model"/>: the input model, rewritten in place), the context its passes filled
/// (<paramref name="Context"/>: plan, log, provenance, statistics reuse), every pass's timing, the files written when
/// <see cref="CompileOptions.OutputPath"/> was given, the verification when held-out data was given, and the typed
/// report that <c>quantc compile</c> writes as JSON (<see cref="CompileReport.ToJson"/>).
/// </summary>
public sealed record CompileResult(Model Model, Recipe Recipe, PassContext Context, IReadOnlyList<PassTiming> Timings,
    OnnxModelWriter.Result? Saved, VerifyReport? Verify, CompileReport Report) : IDisposable
{
    /// <summary>The compile's stages and their times (<see cref="CompileOptions.Clock"/>).</summary>
    public Diagnostics.StageClock Clock { get; init; } = new();

    /// <summary>Whether the compiler loaded the model (<see cref="Compiler.Compile(string, Recipe, CompileOptions?)"/>), so disposing the
    /// result disposes it.</summary>
    public bool OwnsModel { get; init; }

    public void Dispose()
    {
        if (OwnsModel) Model.Dispose();
    }
}

/// <summary>
/// quantc's compile as a library: a recipe's passes run on a model (with calibration data or saved statistics), the
/// result written and opened in ONNX Runtime, verified against the original on held-out data, and described by a
/// typed <see cref="CompileReport"/>. The passes come from a <see cref="PassRegistry"/> (the built-in one is
/// <c>Quantc.Passes.Builtins.Passes()</c>).
/// <code>
/// var compiler = new Compiler(Builtins.Passes());
/// using var model = Model.Load("model.onnx");
/// var calib = DataLoader.Load(model, "calib.txt", new DataOptions { SequenceLength = 128, MaxSamples = 16 });
/// var result = compiler.Compile(model, Builtins.Recipe("w8a8"), new CompileOptions { Calibration = calib, OutputPath = "model.w8a8.onnx"
/// });
/// File.WriteAllText("model.w8a8.report.json", result.Report.ToJson());
/// </code>
/// </summary>
public sealed class Compiler(PassRegistry registry)
{
    /// <summary>Metadata key naming the recipe a model was compiled with.</summary>
    public const string RecipeMetadataKey = "quantc.recipe";

    private readonly PassManager _manager = new(registry);

    /// <summary>Creates every pass of <paramref name="recipe"/>, checking names and parameters before any work.</summary>
    public IReadOnlyList<IPass> Instantiate(Recipe recipe) => _manager.Instantiate(recipe);

    /// <summary>Loads <paramref name="modelPath"/> and compiles it; the result owns (and disposes) the model.</summary>
    public CompileResult Compile(string modelPath, Recipe recipe, CompileOptions? options = null)
    {
        var passes = Instantiate(recipe);
        var model = Model.Load(modelPath);
        try
        {
            var o = options ?? new CompileOptions();
            return Run(model, true, recipe, passes, o.OriginalPath is null ? o with { OriginalPath = modelPath } : o);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Compiles <paramref name="model"/> in place with <paramref name="recipe"/>.</summary>
    public CompileResult Compile(Model model, Recipe recipe, CompileOptions? options = null) =>
        Compile(model, recipe, Instantiate(recipe), options);

    /// <summary>Compiles <paramref name="model"/> in place with <paramref name="passes"/>, already made from <paramref name="recipe"/> by
    /// <see cref="Instantiate"/>.</summary>
    public CompileResult Compile(Model model, Recipe recipe, IReadOnlyList<IPass> passes, CompileOptions? options = null) =>
        Run(model, false, recipe, passes, options ?? new CompileOptions());

    private CompileResult Run(Model model, bool ownsModel, Recipe recipe, IReadOnlyList<IPass> passes, CompileOptions o)
    {
        Diagnostics.MemoryTrace.Mark("compile start");
        var clock = o.Clock ?? new Diagnostics.StageClock();
        var ctx = new PassContext(model) { SavedStatistics = o.SavedStatistics, CalibrationData = o.Calibration?.Samples,
            CalibrationOptions = o.CalibrationRun };
        // Exporter layouts (Constant-node weights, Identity chains, deduplicated weights) normalized first: function-preserving.
        var imported = clock.Time("import", () => Quantc.Ir.Import.ImportNormalizer.Run(model));
        if (imported.NothingDone) ctx.Log.Add(imported.Describe());
        else ctx.Notice(imported.Describe());
        model.File?.DropMappedPages();
        Diagnostics.MemoryTrace.Mark("after import");
        var timings = clock.Time("passes", () => o.Stages.Run($"compiling ({recipe.Name})", p => _manager.Run(passes, ctx, p)));
        model.SetMetadata(RecipeMetadataKey, recipe.Name);

        OnnxModelWriter.Result? saved = null;
        VerifyReport? verify = null;
        string? original = o.OriginalPath ?? model.File?.Path;
        if (o.OutputPath is { } outPath)
        {
            saved = clock.Time("write", () => model.Save(outPath));
            if (model.SpilledBytes > 0) MemoryTrim.Now();   // before ONNX Runtime loads the output
            Diagnostics.MemoryTrace.Mark("after save");
            if (clock.Time("ORT load check", () => OrtModel.LoadError(saved.ModelPath, CustomOps.IsUsedBy(model))) is { } loadError)
            {
                // The input's fault when ONNX Runtime does not load the original either (an op of an old opset it has no kernel for).
                if (original is not null && OrtModel.LoadError(original, false) is { } originalError)
                    throw new BadInputException($"ONNX Runtime cannot load the model: {originalError}; nothing was written");
                throw new InvalidOperationException($"the compiled model does not load in ONNX Runtime ({loadError}); nothing was written");
            }
            Diagnostics.MemoryTrace.Mark("after ORT load check");
            if (o.HeldOut is { } held)
            {
                if (original is null)
                    throw new ArgumentException("verifying needs the original model's file (CompileOptions.OriginalPath)", nameof(o));
                verify = clock.Time("verify", () =>
                {
                    using var a = Model.Load(original);
                    using var b = Model.Load(saved.ModelPath);
                    return o.Stages.Run("verifying", p =>
                        // No greedy decoding here: the compile's report has no field for it (quantc verify decodes), and on a
                        // segmented model it would reopen every segment per token.
                        Verifier.Run(a, b, held.Samples, held.Tokens, new VerifyOptions { PerLayer = false, GreedySteps = 0 }, p));
                });
                Diagnostics.MemoryTrace.Mark("after verify");
            }
        }
        else if (o.HeldOut is not null)
            throw new ArgumentException("verifying needs an output path (CompileOptions.OutputPath)", nameof(o));

        // A verified model with NaN or infinite outputs is reported, whatever the caller does with it.
        var warnings = new List<string>(o.Calibration?.Warnings ?? []);
        if (verify is not null) warnings.AddRange(verify.NonFinite().Select(n => $"verify: {n}"));
        var report = CompileReport.Create(o.InputName ?? original ?? "", o.OutputName
            ?? (o.OutputPath is null ? "" : Path.GetFullPath(o.OutputPath)),
            recipe, ctx, timings, warnings, verify, o.HeldOut?.Description);
        return new CompileResult(model, recipe, ctx, timings, saved, verify, report) { OwnsModel = ownsModel, Clock = clock };
    }
}
