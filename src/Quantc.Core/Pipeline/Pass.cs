using Quantc.Core.Calibration;
using Quantc.Core.Verification;
using Quantc.Ir;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Pipeline;

/// <summary>What a pass does to the model.</summary>
public enum PassKind
{
    /// <summary>Rewrites the float graph without changing its outputs (smoothing, rotation, folding...). Tested by running
    /// before/after.</summary>
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

/// <summary>
/// A pass that calibrates (a plain <see cref="PassContext.Calibrate"/>, no observer) and can say on which tensors before it runs. When
/// it follows other decision passes, which leave the graph as it is, the first of them that calibrates collects its tensors in the
/// same run over the calibration data: ranges and mamba_ranges in quamba run the model once, not twice.
/// </summary>
public interface ICalibrationNeeds
{
    /// <summary>The tensors the pass will calibrate, on the model as it is now; empty when it has nothing to do.</summary>
    IReadOnlyCollection<string> CalibrationNeeds(PassContext context);
}

/// <summary>Everything a pass may read or change.</summary>
public sealed class PassContext(Model model)
{
    public Model Model { get; } = model;
    public QuantPlan Plan { get; } = new() { Spill = model.SpillFileFor };
    public Provenance Provenance { get; } = new();

    /// <summary>How calibration runs (segment size...); the defaults when null.</summary>
    public CalibrationOptions? CalibrationOptions { get; set; }

    /// <summary>
    /// Called by a pass between the layers it reads and rewrites one at a time (float copies of each layer's weights): on a model
    /// large enough to spill (<see cref="Model.SpilledBytes"/> &gt; 0), once more than <see cref="LayerGarbageBytes"/> were allocated
    /// since the last collection, collects them (<see cref="Runtime.MemoryTrim"/>). Without it the GC lets the copies of a 1b
    /// model's layers pile up past a GB before it collects (issue 22 item 10). Nothing happens on a model that does not spill.
    /// </summary>
    /// <param name="now">Collect whatever was allocated since the last time (a pass that just dropped large arrays of its own,
    /// such as GPTQ's Hessians at the end of a segment: arrays alive at the last collection are not counted as garbage).</param>
    public void ReleaseLayerCopies(bool now = false)
    {
        if (Model.SpilledBytes == 0 || (!now && GC.GetTotalMemory(false) - _liveAfterRelease < LayerGarbageBytes)) return;
        Runtime.MemoryTrim.Now();
        _liveAfterRelease = GC.GetTotalMemory(false);
        LayerCopyCollections++;
    }

    /// <summary>How many times <see cref="ReleaseLayerCopies"/> collected.</summary>
    public int LayerCopyCollections { get; private set; }

    /// <summary>How many bytes <see cref="ReleaseLayerCopies"/> lets pile up between collections (default 256 MiB).</summary>
    public long LayerGarbageBytes { get; init; } = 256L << 20;

    private long _liveAfterRelease;

    /// <summary>Calibration samples (model inputs), when the compile was given calibration data.</summary>
    public IReadOnlyList<CalibrationSample>? CalibrationData { get; set; }

    /// <summary>
    /// Statistics of <paramref name="tensors"/> in the model as it is now (after the passes so far).
    /// The one calibration path of a compile: answered from statistics saved by <c>quantc calibrate</c>
    /// while the model is unchanged, else from this compile's own earlier runs at the same model
    /// version (edits are counted by <see cref="Model.Revision"/>), else by one run over
    /// <see cref="CalibrationData"/>. <paramref name="observe"/> (tensor name, one sample's data,
    /// channels) sees the raw activations of that run — row samplers, GPTQ's Hessians — so a pass
    /// that needs both statistics and raw data runs the model once. <paramref name="completed"/> gets tensors as soon as
    /// <paramref name="observe"/> has seen all of their data (per segment of a model run in segments), so that what the pass
    /// gathered for them can be used and freed during the run.
    /// </summary>
    public Dictionary<string,
        TensorStats> Calibrate(IReadOnlyList<string> tensors, string pass, Action<string, ReadOnlySpan<float>, int>? observe = null,
        Action<IReadOnlyList<string>>? completed = null)
    {
        var wanted = tensors.Distinct().ToList();
        if (observe is null && completed is null)
        {
            if (SavedValid && wanted.All(_saved!.ContainsKey))
            {
                StatisticsReused++;
                return wanted.ToDictionary(t => t, t => _saved![t], StringComparer.Ordinal);
            }
            if (_cacheVersion == Model.Revision && wanted.All(_cache.ContainsKey))
                return wanted.ToDictionary(t => t, t => _cache[t], StringComparer.Ordinal);
        }
        if (CalibrationData is null || CalibrationData.Count == 0)
            throw new Quantc.Onnx.BadInputException(_saved is null
                ? $"pass '{pass}' needs calibration data: give --calib DATA"
                : $"pass '{pass}' needs statistics the saved calibration does not have (of the rewritten model, or other tensors): give " +
                    $"--calib DATA as well");
        var run = wanted;
        if (observe is null && completed is null && CalibrationAhead.Count > 0)
        {
            var ahead = CalibrationAhead.Where(t => !wanted.Contains(t) && !(_cacheVersion == Model.Revision && _cache.ContainsKey(t)) &&
                Model.Graph.Find(t) is { ElementType: 0 or (int)DT.Float or (int)DT.Float16 }).Distinct().ToList();
            if (ahead.Count > 0)
            {
                run = [.. wanted, .. ahead];
                Log.Add($"{pass}: the same calibration run collects {ahead.Count} tensors for the passes after it " +
                    $"({string.Join(", ", CalibrationAheadFor)})");
            }
        }
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        var fresh = Calibrator.Collect(Model, run, CalibrationData, CalibrationOptions, observe: observe, completed: completed);
        CalibrationTime += System.Diagnostics.Stopwatch.GetElapsedTime(started);
        if (_cacheVersion != Model.Revision) { _cache.Clear(); _cacheVersion = Model.Revision; }
        foreach (var (k, v) in fresh) _cache[k] = v;
        return wanted.ToDictionary(t => t, t => fresh[t], StringComparer.Ordinal);
    }

    /// <summary>
    /// Tensors that the decision passes right after this one will calibrate on the model as it is (set by the pass manager from their
    /// <see cref="ICalibrationNeeds"/>): a plain <see cref="Calibrate"/> collects them in the same run.
    /// </summary>
    public IReadOnlyCollection<string> CalibrationAhead { get; set; } = [];

    /// <summary>The passes <see cref="CalibrationAhead"/> is for (named in the log).</summary>
    public IReadOnlyList<string> CalibrationAheadFor { get; set; } = [];

    /// <summary>
    /// Time spent in calibration runs of <see cref="Calibrate"/> so far (ONNX Runtime over the calibration data, with the passes'
    /// <c>observe</c> callbacks); answers from saved or cached statistics cost nothing here.
    /// </summary>
    public TimeSpan CalibrationTime { get; private set; }

    /// <summary>Whether <see cref="Calibrate"/> can answer for <paramref name="tensors"/> (calibration data, or saved statistics that cover
    /// them).</summary>
    public bool CanCalibrate(IEnumerable<string> tensors) =>
        CalibrationData is { Count: > 0 } || (SavedValid && tensors.All(_saved!.ContainsKey));

    private readonly Dictionary<string, TensorStats> _cache = new(StringComparer.Ordinal);
    private long _cacheVersion = -1;
    private IReadOnlyDictionary<string, TensorStats>? _saved;
    private long _savedVersion;

    private bool SavedValid => _saved is not null && _savedVersion == Model.Revision;

    /// <summary>Statistics from an earlier <c>quantc calibrate</c> of the model as it is when they are set (valid until a pass edits the
    /// graph).</summary>
    public IReadOnlyDictionary<string, TensorStats>? SavedStatistics
    {
        get => SavedValid ? _saved : null;
        set { _saved = value; _savedVersion = Model.Revision; }
    }

    /// <summary>How many times saved statistics answered a pass instead of a calibration run.</summary>
    public int StatisticsReused { get; private set; }

    /// <summary>
    /// The model map of the main graph as it is now: built on first use and rebuilt only when the
    /// model has been edited since (<see cref="Model.Revision"/>), so passes share one analysis.
    /// </summary>
    public Quantc.Ir.Analysis.ModelMap Map
    {
        get
        {
            if (_map is null || _map.Revision != Model.Revision) _map = Quantc.Ir.Analysis.LayerAnalysis.Analyze(Model.Graph);
            return _map;
        }
    }

    private Quantc.Ir.Analysis.ModelMap? _map;

    /// <summary>Notes for the report, in order ("smooth: model.layers.0.self_attn.q_proj α=0.5, max s=12.3").</summary>
    public List<string> Log { get; } = [];

    /// <summary>
    /// What the compile prints on screen besides the summary: a pass that found nothing to do (with the
    /// measured figure), or that changed what the recipe asked for. Each is in <see cref="Log"/> too.
    /// </summary>
    public List<string> Notices { get; } = [];

    /// <summary>Adds <paramref name="message"/> to <see cref="Notices"/> and <see cref="Log"/>.</summary>
    public void Notice(string message)
    {
        Notices.Add(message);
        Log.Add(message);
    }
}

/// <summary>A registered pass kind: how to make one from recipe parameters.</summary>
public sealed record PassInfo(string Name, PassKind Kind, string Description, Func<PassParameters, IPass> Create)
{
    /// <summary>The record the pass's options bind to (<see cref="NoOptions"/> for none).</summary>
    public Type OptionsType { get; init; } = typeof(NoOptions);

    /// <summary>The declared options, each with its type, default and one-line doc.</summary>
    public IReadOnlyList<OptionInfo> Options => OptionInfo.Of(OptionsType);

    /// <summary>What the pass needs from earlier passes, provides and makes stale; null: the default of its kind.</summary>
    public PassContract? Contract { get; init; }

    /// <summary><see cref="Contract"/>, or the default of the pass's kind.</summary>
    public PassContract EffectiveContract => Contract ?? PassContract.Default(Kind);

    /// <summary>
    /// Declares a pass once: its name, kind, one-line summary and options record; the registry,
    /// <c>quantc recipes</c> and the recipe errors all come from this.
    /// </summary>
    public static PassInfo Of<T>(string name, PassKind kind, string summary, Func<T, IPass> create) where T : PassOptions, new()
    {
        OptionInfo.Of(typeof(T)); // checks the declaration now, not at the first recipe that names the pass
        return new PassInfo(name, kind, summary, p => create(PassOptions.Bind<T>(p))) { OptionsType = typeof(T) };
    }
}

/// <summary>The passes recipes can name.</summary>
public sealed class PassRegistry
{
    private readonly SortedDictionary<string, PassInfo> _passes = new(StringComparer.Ordinal);

    public IReadOnlyCollection<PassInfo> All => _passes.Values;

    public void Register(PassInfo info) => _passes.Add(info.Name, info);

    /// <summary>The declaration of pass <paramref name="name"/>, or null when no pass has that name.</summary>
    public PassInfo? Find(string name) => _passes.GetValueOrDefault(name);

    /// <summary>Makes pass <paramref name="name"/>; unknown names and parameters are clear errors.</summary>
    public IPass Create(string name, PassParameters parameters)
    {
        if (!_passes.TryGetValue(name, out var info))
            throw new Quantc.Onnx.BadInputException($"{parameters.Where}: unknown pass '{name}' " +
                $"(known: {string.Join(", ", _passes.Keys)})");
        var pass = info.Create(parameters);
        parameters.EnsureAllUsed();
        return pass;
    }
}
