using Quantc.Core.Calibration;
using Quantc.Core.Verification;
using Quantc.Ir;

namespace Quantc.Core.Pipeline;

/// <summary>What a pass does to the model.</summary>
public enum PassKind
{
    /// <summary>Rewrites the float graph without changing its outputs (smoothing, rotation, folding...). Tested by running before/after.</summary>
    FunctionPreserving,
    /// <summary>Records decisions in the QuantPlan without touching the graph (precision, ranges, weight rounding).</summary>
    Decision,
    /// <summary>Turns the plan into operators (QDQ, contrib ops, ai.quantc ops).</summary>
    Lowering,
}

/// <summary>A pass: one job, parameters from the recipe, run by the <see cref="PassManager"/>.</summary>
public interface IPass
{
    /// <summary>The name recipes use.</summary>
    string Name { get; }

    PassKind Kind { get; }

    /// <summary>Runs the pass.</summary>
    void Run(PassContext context);
}

/// <summary>Everything a pass may read or change.</summary>
public sealed class PassContext(Model model)
{
    public Model Model { get; } = model;
    public QuantPlan Plan { get; } = new();
    public Provenance Provenance { get; } = new();

    /// <summary>Calibration samples (model inputs), when the compile was given calibration data.</summary>
    public IReadOnlyList<CalibrationSample>? CalibrationData { get; set; }

    /// <summary>
    /// Statistics of <paramref name="tensors"/> in the model as it is now (after the passes so far),
    /// from a calibration run over <see cref="CalibrationData"/>.
    /// </summary>
    public Dictionary<string, TensorStats> Calibrate(IReadOnlyList<string> tensors, string pass)
    {
        // Statistics loaded from a file describe the model as it was loaded: usable until a pass rewrites it.
        if (SavedStatistics is { } saved && tensors.All(saved.ContainsKey))
        {
            StatisticsReused++;
            return tensors.Distinct().ToDictionary(t => t, t => saved[t], StringComparer.Ordinal);
        }
        if (CalibrationData is null || CalibrationData.Count == 0)
            throw new Quantc.Onnx.BadInputException(SavedStatistics is null
                ? $"pass '{pass}' needs calibration data: give --calib DATA"
                : $"pass '{pass}' needs statistics the saved calibration does not have (of the rewritten model, or other tensors): give --calib DATA as well");
        return Calibrator.Collect(Model, tensors, CalibrationData);
    }

    /// <summary>Statistics from an earlier <c>quantc calibrate</c> of the same model (valid until a pass rewrites the graph).</summary>
    public IReadOnlyDictionary<string, TensorStats>? SavedStatistics { get; set; }

    /// <summary>How many times saved statistics answered a pass instead of a calibration run.</summary>
    public int StatisticsReused { get; private set; }

    /// <summary>Called after a pass that changed the model: saved statistics no longer describe it.</summary>
    public void ModelChanged() => SavedStatistics = null;

    /// <summary>Notes for the report, in order ("smooth: model.layers.0.self_attn.q_proj α=0.5, max s=12.3").</summary>
    public List<string> Log { get; } = [];
}

/// <summary>A registered pass kind: how to make one from recipe parameters.</summary>
public sealed record PassInfo(string Name, PassKind Kind, string Description, Func<PassParameters, IPass> Create);

/// <summary>The passes recipes can name.</summary>
public sealed class PassRegistry
{
    private readonly SortedDictionary<string, PassInfo> _passes = new(StringComparer.Ordinal);

    public IReadOnlyCollection<PassInfo> All => _passes.Values;

    public void Register(PassInfo info) => _passes.Add(info.Name, info);

    /// <summary>Makes pass <paramref name="name"/>; unknown names and parameters are clear errors.</summary>
    public IPass Create(string name, PassParameters parameters)
    {
        if (!_passes.TryGetValue(name, out var info))
            throw new Quantc.Onnx.BadInputException($"{parameters.Where}: unknown pass '{name}' (known: {string.Join(", ", _passes.Keys)})");
        var pass = info.Create(parameters);
        parameters.EnsureAllUsed();
        return pass;
    }
}
