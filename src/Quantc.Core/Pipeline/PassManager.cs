using System.Diagnostics;
using Quantc.Ir;

namespace Quantc.Core.Pipeline;

/// <summary>
/// How long one pass took and what it left behind; <paramref name="Calibration"/>: the part of <paramref name="Elapsed"/> spent in
/// calibration runs (<see cref="PassContext.CalibrationTime"/>); <paramref name="Housekeeping"/>: the pass manager's work after it
/// (validating the graph, dropping mapped pages, collecting a spilling model's garbage), not in <paramref name="Elapsed"/>;
/// <paramref name="Cpu"/>: the process's CPU time (all threads, ONNX Runtime's included) over <paramref name="Elapsed"/>.
/// </summary>
public sealed record PassTiming(string Pass, PassKind Kind, TimeSpan Elapsed, int NodesBefore, int NodesAfter,
    TimeSpan Calibration = default, TimeSpan Housekeeping = default, TimeSpan Cpu = default);

/// <summary>
/// Runs a recipe's passes in order: times each, validates the graph after each (a pass that
/// breaks the graph is a bug, reported with the pass's name), and finally writes the provenance
/// into the model's metadata so verify and diff can map tensors across the rewrites.
/// </summary>
public sealed class PassManager(PassRegistry registry)
{
    /// <summary>
    /// Creates every pass of <paramref name="recipe"/>, checking names, parameters and the order of the passes against their
    /// contracts (<see cref="PassContract"/>) before anything runs.
    /// </summary>
    public IReadOnlyList<IPass> Instantiate(Recipe recipe)
    {
        var passes = recipe.Steps.Select(s => registry.Create(s.Pass, s.Parameters)).ToList();
        var steps = recipe.Steps.Select(s => (s.Parameters.Where, s.Pass, registry.Find(s.Pass)!.EffectiveContract)).ToList();
        if (PassContract.Check(steps, registry.All) is { } problem) throw new Quantc.Onnx.BadInputException(problem);
        return passes;
    }

    /// <summary>Runs <paramref name="passes"/> on <paramref name="context"/>.</summary>
    public IReadOnlyList<PassTiming> Run(IReadOnlyList<IPass> passes, PassContext context,
        IProgress<(int Done, int Total)>? progress = null)
    {
        var timings = new List<PassTiming>();
        var contracts = passes.Select(p => (p.Name, registry.Find(p.Name)?.EffectiveContract ?? PassContract.Default(p.Kind))).ToList();
        if (PassContract.Unlowered(contracts, registry.All) is { } unlowered) context.Notice(unlowered);
        for (int i = 0; i < passes.Count; i++)
        {
            var pass = passes[i];
            int before = context.Model.Graph.AllNodes().Count();
            var calibrated = context.CalibrationTime;
            (context.CalibrationAhead, context.CalibrationAheadFor) = pass.Kind == PassKind.Decision ? Ahead(passes, i, context) : ([], []);
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            try
            {
                pass.Run(context);
            }
            finally
            {
                (context.CalibrationAhead, context.CalibrationAheadFor) = ([], []);
            }
            sw.Stop();
            cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu;
            long housekeeping = Stopwatch.GetTimestamp();
            var problems = context.Model.Graph.FindProblems();
            if (problems.Count > 0)
                throw new InvalidOperationException($"pass '{pass.Name}' left the graph invalid: {string.Join("; ", problems.Take(5))}");
            int after = context.Model.Graph.AllNodes().Count();
            context.Model.File?.DropMappedPages();   // weights read through the maps leave the resident set
            if (context.Model.SpilledBytes > 0) Runtime.MemoryTrim.Now();   // a large model's garbage goes before the next pass
            timings.Add(new PassTiming(pass.Name, pass.Kind, sw.Elapsed, before, after, context.CalibrationTime - calibrated,
                Stopwatch.GetElapsedTime(housekeeping), cpu));
            Diagnostics.MemoryTrace.Mark($"after {pass.Name}");
            progress?.Report((i + 1, passes.Count));
        }
        if (context.Provenance.Origins.Count > 0) context.Provenance.WriteTo(context.Model);
        return timings;
    }

    /// <summary>
    /// What the decision passes right after pass <paramref name="i"/> (up to the first pass that may edit the graph) will calibrate:
    /// with calibration data, their tensors join pass <paramref name="i"/>'s run.
    /// </summary>
    private static (IReadOnlyCollection<string> Tensors, IReadOnlyList<string> Passes) Ahead(IReadOnlyList<IPass> passes, int i,
        PassContext context)
    {
        if (context.CalibrationData is not { Count: > 0 }) return ([], []);
        var tensors = new HashSet<string>(StringComparer.Ordinal);
        var names = new List<string>();
        for (int j = i + 1; j < passes.Count && passes[j].Kind == PassKind.Decision; j++)
            if (passes[j] is ICalibrationNeeds needs && needs.CalibrationNeeds(context) is { Count: > 0 } more)
            {
                tensors.UnionWith(more);
                names.Add(passes[j].Name);
            }
        return (tensors, names);
    }
}
