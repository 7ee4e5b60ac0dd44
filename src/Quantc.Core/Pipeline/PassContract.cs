namespace Quantc.Core.Pipeline;

/// <summary>What recipes pass from one pass to the next: the facts a pass needs, provides or makes stale.</summary>
public static class Facts
{
    /// <summary>Linear layers still in float (true at the start; a lowering pass replaces them by quantized operators).</summary>
    public const string FloatLayers = "the float linear layers";

    /// <summary>Each layer's number formats in the plan (quantize).</summary>
    public const string Formats = "the layers' quantization formats";

    /// <summary>The rounded weights in the plan (weights).</summary>
    public const string RoundedWeights = "the rounded weights";

    /// <summary>Static activation ranges in the plan (ranges).</summary>
    public const string Ranges = "the activation ranges";
}

/// <summary>
/// A pass's contract with the recipe around it: the <see cref="Facts"/> it needs from earlier passes, those it provides,
/// and those it makes stale (a function-preserving rewrite after the weights were rounded would lower stale weights).
/// The pass manager checks a recipe against the contracts before any work (<see cref="PassManager.Instantiate"/>).
/// </summary>
public sealed record PassContract(IReadOnlyList<string> Needs, IReadOnlyList<string> Provides, IReadOnlyList<string> Invalidates)
{
    /// <summary>The contract of a pass that declares none: a function-preserving rewrite needs the float layers and makes
    /// rounded weights and ranges stale; a decision pass needs the float layers; a lowering (fusion) pass needs nothing.</summary>
    public static PassContract Default(PassKind kind) => kind switch
    {
        PassKind.FunctionPreserving => new([Facts.FloatLayers], [], [Facts.RoundedWeights, Facts.Ranges]),
        PassKind.Decision => new([Facts.FloatLayers], [], []),
        _ => new([], [], []),
    };

    /// <summary>A pass that lowers the plan into operators: needs formats and rounded weights, replaces the float layers.</summary>
    public static PassContract Lowers { get; } = new([Facts.Formats, Facts.RoundedWeights], [], [Facts.FloatLayers]);

    /// <summary>
    /// Checks passes in recipe order; the reason (one line, starting with the step's place in the recipe) for the first
    /// problem, or null. <paramref name="steps"/> are (where, name, contract); <paramref name="all"/> every registered
    /// pass, to name who provides a missing fact.
    /// </summary>
    public static string? Check(IReadOnlyList<(string Where, string Name, PassContract Contract)> steps,
        IReadOnlyCollection<PassInfo> all)
    {
        var available = new Dictionary<string, string?>(StringComparer.Ordinal) { [Facts.FloatLayers] = null }; // fact → provider
        var gone = new Dictionary<string, string>(StringComparer.Ordinal);                                     // fact → who removed it
        for (int i = 0; i < steps.Count; i++)
        {
            var (where, name, c) = steps[i];
            string place = where[(where.LastIndexOf(": ", StringComparison.Ordinal) + 2)..];   // "pass 3 (weights)"
            foreach (var need in c.Needs)
            {
                if (available.ContainsKey(need)) continue;
                if (gone.TryGetValue(need, out var by))
                    return $"{where} needs {need}, but {by} has already lowered them: put {name} before {by}";
                var providers = all.Where(p => p.EffectiveContract.Provides.Contains(need)).Select(p => p.Name).ToList();
                return $"{where} needs {need}, which no earlier pass provides (put {string.Join(" or ", providers)} before it)";
            }
            foreach (var stale in c.Invalidates)
            {
                if (!available.TryGetValue(stale, out var provider)) continue;
                if (provider is not null)
                    return $"{where} changes the model after {provider} produced {stale}, which would then be stale: put " +
                        $"{name} before {provider}";
                available.Remove(stale);
                gone[stale] = place;
            }
            foreach (var fact in c.Provides) available[fact] = place;
        }
        return null;
    }

    /// <summary>
    /// The notice for a recipe whose last format decision no later pass lowers (its layers stay float in the output), or null.
    /// Not an error: a plan may be compiled only to be inspected (the compile summary then counts 0 quantized layers).
    /// </summary>
    public static string? Unlowered(IReadOnlyList<(string Name, PassContract Contract)> steps, IReadOnlyCollection<PassInfo> all)
    {
        int lastFormats = -1, lastLowering = -1;
        for (int i = 0; i < steps.Count; i++)
        {
            if (steps[i].Contract.Provides.Contains(Facts.Formats)) lastFormats = i;
            if (steps[i].Contract.Invalidates.Contains(Facts.FloatLayers)) lastLowering = i;
        }
        if (lastFormats < 0 || lastLowering > lastFormats) return null;
        var lowerings = all.Where(p => p.EffectiveContract.Invalidates.Contains(Facts.FloatLayers)).Select(p => p.Name);
        return $"{steps[lastFormats].Name} decided formats, but no later pass of the recipe lowers them: the layers stay float in " +
            $"the output (add {string.Join(", ", lowerings)} after it)";
    }
}
