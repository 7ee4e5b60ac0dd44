namespace Quantc.Core.Numerics.Reconstruction;

/// <summary>How a trainer splits its calibration sequences (see <see cref="RoundingSettings.Holdout"/>).</summary>
/// <param name="Train">The sequences it learns from, as indices in ascending order.</param>
/// <param name="HeldOut">Those it holds out to choose the snapshot and to stop early (empty when the hold-out is off).</param>
/// <param name="Fraction">The hold-out share that was asked for.</param>
public sealed record HoldoutSplit(int[] Train, int[] HeldOut, double Fraction)
{
    /// <summary>Fewer calibration sequences than this: nothing is held out, whatever the fraction.</summary>
    public const int MinSequences = 4;

    /// <summary>Whether sequences are held out.</summary>
    public bool Active => HeldOut.Length > 0;

    /// <summary>Whether a hold-out was asked for but there were too few sequences to give one.</summary>
    public bool TooFew => Fraction > 0 && !Active;

    public int Sequences => Train.Length + HeldOut.Length;

    /// <summary>round(<paramref name="fraction"/> · <paramref name="sequences"/>) sequences held out, at least one and at most all but
    /// one, chosen by a generator seeded with <paramref name="seed"/> (not the one that draws the batches); none when
    /// <paramref name="fraction"/> is 0 or there are fewer than <see cref="MinSequences"/>.</summary>
    public static HoldoutSplit Of(int sequences, double fraction, int seed)
    {
        if (fraction < 0 || fraction >= 1) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "must lie in [0, 1)");
        if (fraction == 0 || sequences < MinSequences) return new([.. Enumerable.Range(0, sequences)], [], fraction);
        int held = Math.Clamp((int)Math.Round(fraction * sequences, MidpointRounding.AwayFromZero), 1, sequences - 1);
        var order = Enumerable.Range(0, sequences).ToArray();
        new Random(unchecked(seed * 7919 + 104729)).Shuffle(order);
        var heldOut = order[..held];
        Array.Sort(heldOut);
        var train = order[held..];
        Array.Sort(train);
        return new(train, heldOut, fraction);
    }

    /// <summary>"4 of 32 sequences held out", or why none are.</summary>
    public string Describe() => Active ? $"{HeldOut.Length} of {Sequences} sequences held out"
        : TooFew ? $"holdout off: {Sequences} calibration sequences, fewer than {MinSequences}" : "holdout 0";
}

/// <summary>Which rows chose a trainer's result, and the errors on the rows it trained on.</summary>
/// <param name="Split">The held-out and training sequences.</param>
/// <param name="BestStep">The step whose parameters were kept (0: round-to-nearest's, or no step run).</param>
/// <param name="TrainRtnError">Round-to-nearest's relative error over the training rows (every row when nothing is held out).</param>
/// <param name="TrainLearnedError">The same at <see cref="BestStep"/>.</param>
/// <param name="TrainCurve">The training rows' error at the end of each window.</param>
public sealed record Selection(HoldoutSplit Split, int BestStep, double TrainRtnError, double TrainLearnedError,
    IReadOnlyList<double> TrainCurve);

/// <summary>
/// The early stop and best snapshot both trainers share: after each window of max(25, iterations / 40) steps the error on the
/// selection rows (the held-out ones, or every row) is compared with the best so far; training stops after
/// <see cref="RoundingSettings.Patience"/> windows without a relative improvement of <see cref="RoundingSettings.MinImprovement"/>.
/// </summary>
internal sealed class WindowTracker(RoundingSettings s, HoldoutSplit split, double rtnError, double trainRtnError)

{
    private readonly List<double> _curve = [];
    private readonly List<double> _trainCurve = [];
    private int _strikes;

    public int Window { get; } = Math.Max(25, s.Iterations / 40);
    public double Best { get; private set; } = rtnError;
    public bool Stopped { get; private set; }
    public IReadOnlyList<double> Curve => _curve;

    private int _bestStep;
    private double _bestTrain = double.NaN;

    /// <summary>Whether step <paramref name="done"/> (counted from 1) ends a window.</summary>
    public bool EndsWindow(int done) => done % Window == 0 || done == s.Iterations;

    /// <summary>Records a window's errors; true when <paramref name="error"/> is the best so far (the caller then snapshots).</summary>
    public bool Record(int done, double error, double trainError)
    {
        _curve.Add(error);
        _trainCurve.Add(trainError);
        if (error < Best * (1 - s.MinImprovement)) _strikes = 0;
        else if (s.Patience > 0 && ++_strikes >= s.Patience && done < s.Iterations) Stopped = true;
        if (!(error < Best)) return false;
        Best = error;
        _bestStep = done;
        _bestTrain = trainError;
        return true;
    }

    public Selection Selection() => new(split, _bestStep, trainRtnError, _bestStep == 0 ? trainRtnError : _bestTrain, _trainCurve);
}
