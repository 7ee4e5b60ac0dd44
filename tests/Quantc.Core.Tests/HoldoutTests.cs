using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Xunit.Abstractions;

namespace Quantc.Core.Tests;

/// <summary>Held-out calibration sequences for the learned-rounding trainers' early stop and snapshot
/// (<see cref="RoundingSettings.Holdout"/>).</summary>
public class HoldoutTests(ITestOutputHelper log)
{
    [Fact]
    public void TheSplitIsDeterministicForASeedDisjointAndComplete()
    {
        var a = HoldoutSplit.Of(32, 0.125, 5);
        var b = HoldoutSplit.Of(32, 0.125, 5);
        Assert.Equal(a.HeldOut, b.HeldOut);
        Assert.Equal(a.Train, b.Train);
        Assert.Equal(4, a.HeldOut.Length);
        Assert.Empty(a.HeldOut.Intersect(a.Train));
        Assert.Equal(Enumerable.Range(0, 32), a.HeldOut.Concat(a.Train).Order());
        Assert.Equal(a.HeldOut.Order(), a.HeldOut);
        // Another seed holds out other sequences (not the first ones: the choice is shuffled).
        Assert.NotEqual(a.HeldOut, HoldoutSplit.Of(32, 0.125, 6).HeldOut);
        Assert.NotEqual([0, 1, 2, 3], a.HeldOut);
        Assert.Equal(a.HeldOut, new RoundingSettings { Seed = 5, Holdout = 0.125 }.SplitOf(32).HeldOut);
    }

    [Theory]
    [InlineData(3, 0.125, 0)]
    [InlineData(4, 0.125, 1)]
    [InlineData(7, 0.125, 1)]
    [InlineData(13, 0.125, 2)]
    [InlineData(32, 0.25, 8)]
    [InlineData(8, 0.5, 4)]
    [InlineData(100, 0, 0)]
    public void HeldOutCountsFollowTheFraction(int sequences, double fraction, int held)
    {
        var s = HoldoutSplit.Of(sequences, fraction, 1);
        Assert.Equal(held, s.HeldOut.Length);
        Assert.Equal(sequences - held, s.Train.Length);
        Assert.Equal(held > 0, s.Active);
    }

    [Fact]
    public void TooFewSequencesTurnTheHoldoutOffAndSaySo()
    {
        var s = HoldoutSplit.Of(3, 0.125, 0);
        Assert.True(s.TooFew);
        Assert.Contains("holdout off: 3 calibration sequences, fewer than 4", s.Describe(), StringComparison.Ordinal);
        Assert.False(HoldoutSplit.Of(3, 0, 0).TooFew);
        Assert.Equal("4 of 32 sequences held out", HoldoutSplit.Of(32, 0.125, 0).Describe());
        Assert.Throws<ArgumentOutOfRangeException>(() => HoldoutSplit.Of(8, 1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => HoldoutSplit.Of(8, -0.1, 0));
    }

    /// <summary>Fingerprints taken with the trainers as they were before the hold-out (commit eb6f7c0, where every row trained and
    /// selected): holdout 0 must give the same bits.</summary>
    [Theory]
    [InlineData(RoundingMethod.FlexRound, "125 True False 633507E1D70A0F5B", "200 False False 97A953B2DE8D16AC")]
    [InlineData(RoundingMethod.Lrq, "100 True False 8AE9BD04A80188A6", "200 False False 939308BE33D3C637")]
    public void HoldoutZeroGivesThePreviousResultBitForBit(RoundingMethod method, string layer, string block)
    {
        var (w, rtn, xs) = HoldoutProblems.Layer(8, 16, 21);
        var o = RoundingTrainer.Train(w, rtn, xs, null, HoldoutProblems.Settings(method, 600) with { Holdout = 0 });
        Assert.Equal(layer, HoldoutProblems.Fingerprint([o.Weight], o.RtnError, o.LearnedError, o.KeptRtn, o.Iterations,
            o.StoppedEarly, o.Curve));
        Assert.False(o.Selection.Split.Active);
        Assert.Equal(o.Curve, o.Selection.TrainCurve);
        Assert.Equal(o.RtnError, o.Selection.TrainRtnError);
        Assert.Equal(o.LearnedError, o.Selection.TrainLearnedError);
        var (b, bw, brtn, samples) = HoldoutProblems.Block(8, 40);
        var ob = BlockTrainer.Train(b, bw, brtn, samples, HoldoutProblems.Settings(method, 200) with { Holdout = 0 });
        Assert.Equal(block, HoldoutProblems.Fingerprint(ob.Weights, ob.RtnError, ob.LearnedError, ob.KeptRtn, ob.Iterations,
            ob.StoppedEarly, ob.Curve));
        Assert.Equal(ob.Curve, ob.Selection.TrainCurve);
    }

    [Fact]
    public void FewerThanFourSequencesTrainAsWithHoldoutZero()
    {
        var (w, rtn, xs) = HoldoutProblems.Layer(3, 16, 21);
        var s = HoldoutProblems.Settings(RoundingMethod.FlexRound, 200);
        var on = RoundingTrainer.Train(w, rtn, xs, null, s with { Holdout = 0.25 });
        var off = RoundingTrainer.Train(w, rtn, xs, null, s with { Holdout = 0 });
        Assert.True(on.Selection.Split.TooFew);
        Assert.Equal(off.Curve, on.Curve);
        Assert.Equal(off.Weight.Values, on.Weight.Values);
    }

    /// <summary>Training draws its batches from the training sequences only: what the held-out sequences hold changes the
    /// held-out curve, not the training one; and the run equals a run on the training sequences alone without hold-out.</summary>
    [Fact]
    public void BatchesComeOnlyFromTheTrainingSequences()
    {
        var (w, rtn, xs) = HoldoutProblems.Layer(8, 16, 21);
        var s = HoldoutProblems.Settings(RoundingMethod.FlexRound, 300) with { Patience = 0, Holdout = 0.25 };
        var split = s.SplitOf(xs.Count);
        Assert.Equal(2, split.HeldOut.Length);
        var (_, _, other) = HoldoutProblems.Layer(8, 16, 99);
        var swapped = xs.Select((x, i) => split.HeldOut.Contains(i) ? other[i] : x).ToList();
        var a = RoundingTrainer.Train(w, rtn, xs, null, s);
        var b = RoundingTrainer.Train(w, rtn, swapped, null, s);
        Assert.Equal(a.Selection.TrainCurve, b.Selection.TrainCurve);
        Assert.NotEqual(a.Curve, b.Curve);
        var alone = RoundingTrainer.Train(w, rtn, [.. split.Train.Select(i => xs[i])], null, s with { Holdout = 0 });
        Assert.Equal(alone.Curve, a.Selection.TrainCurve);

        var (block, bw, brtn, samples) = HoldoutProblems.Block(8, 40);
        var bs = HoldoutProblems.Settings(RoundingMethod.Lrq, 100) with { Patience = 0, Holdout = 0.25 };
        var bsplit = bs.SplitOf(samples.Count);
        var (_, _, _, others) = HoldoutProblems.Block(8, 77);
        var ba = BlockTrainer.Train(block, bw, brtn, samples, bs);
        var bb = BlockTrainer.Train(block, bw, brtn, [.. samples.Select((x, i) => bsplit.HeldOut.Contains(i) ? others[i] : x)], bs);
        Assert.Equal(ba.Selection.TrainCurve, bb.Selection.TrainCurve);
        Assert.NotEqual(ba.Curve, bb.Curve);
        var balone = BlockTrainer.Train(block, bw, brtn, [.. bsplit.Train.Select(i => samples[i])], bs with { Holdout = 0 });
        Assert.Equal(balone.Curve, ba.Selection.TrainCurve);
    }

    /// <summary>Few rows (fewer than the layer's inputs) and many steps: the training rows' error keeps falling while the held-out
    /// error turns up. The held-out choice keeps an earlier step, stops earlier, and its weights are better on the held-out rows
    /// than those the training error chose.</summary>
    [Fact]
    public void OnAnOverfittedLayerTheHeldOutErrorStopsEarlierAndChoosesBetter()
    {
        var (w, rtn, xs) = HoldoutProblems.Layer(8, 2, 31, n: 16, k: 64);
        var s = new RoundingSettings
        {
            Method = RoundingMethod.FlexRound, Iterations = 2000, LearningRate = 5e-3, Seed = 4, Fp8Moments = false, Patience = 6,
            Holdout = 0.25,
        };
        var split = s.SplitOf(xs.Count);
        var train = split.Train.Select(i => xs[i]).ToList();
        var held = split.HeldOut.Select(i => xs[i]).ToList();
        var heldOut = RoundingTrainer.Train(w, rtn, xs, null, s);
        // The same training run, chosen by its training error.
        var byTrain = RoundingTrainer.Train(w, rtn, train, null, s with { Holdout = 0 });
        log.WriteLine($"held-out choice: step {heldOut.Selection.BestStep} of {heldOut.Iterations}, held-out error " +
            $"{heldOut.RtnError:0.000e0} (RTN) → {heldOut.LearnedError:0.000e0}; training choice: step {byTrain.Selection.BestStep} " +
            $"of {byTrain.Iterations}, training error {byTrain.RtnError:0.000e0} → {byTrain.LearnedError:0.000e0}");
        log.WriteLine("held-out curve " + string.Join(" ", heldOut.Curve.Select(v => v.ToString("0.000e0"))));
        log.WriteLine("training curve " + string.Join(" ", byTrain.Curve.Select(v => v.ToString("0.000e0"))));
        Assert.True(byTrain.LearnedError < 0.5 * byTrain.RtnError, "the training rows are fitted");
        Assert.True(heldOut.Selection.BestStep < byTrain.Selection.BestStep,
            $"held-out choice at step {heldOut.Selection.BestStep}, training choice at {byTrain.Selection.BestStep}");
        Assert.True(heldOut.Iterations < byTrain.Iterations, $"{heldOut.Iterations} vs {byTrain.Iterations} steps");
        double Held(QuantizedWeight q) => RoundingTrainer.FullError(held, null, w, q.Dequantize(), rtn.N, rtn.K);
        Assert.Equal(heldOut.LearnedError, Held(heldOut.Weight), 6);
        Assert.True(Held(heldOut.Weight) < Held(byTrain.Weight),
            $"held-out error of the held-out choice {Held(heldOut.Weight):0.000e0} vs the training choice {Held(byTrain.Weight):0.000e0}");
    }

    [Fact]
    public void KeepingRoundToNearestIsDecidedOnTheHeldOutRows()
    {
        // Held-out rows unlike the training rows (independent channels, other strong ones, where moving away from round-to-nearest
        // costs): learning lowers the training rows' error, not theirs, so round-to-nearest is kept; without a hold-out the same
        // rows all train and select, and the learned rounding is kept.
        var (w, rtn, xs) = HoldoutProblems.Layer(8, 16, 21);
        var s = HoldoutProblems.Settings(RoundingMethod.FlexRound, 300) with { Patience = 0, Holdout = 0.25 };
        var split = s.SplitOf(xs.Count);
        var mixed = xs.Select((x, i) => split.HeldOut.Contains(i)
            ? StoredMatrix.Float32(HoldoutProblems.Random(16 * rtn.K, 500 + i).Select((v, j) => j % rtn.K % 7 == 3 ? 4 * v : v)
                .ToArray(), rtn.K) : x).ToList();
        var o = RoundingTrainer.Train(w, rtn, mixed, null, s);
        var all = RoundingTrainer.Train(w, rtn, mixed, null, s with { Holdout = 0 });
        log.WriteLine($"held-out {o.RtnError:0.000e0} → lowest {o.Curve.Min():0.000e0} (kept RTN {o.KeptRtn}); training rows " +
            $"{o.Selection.TrainRtnError:0.000e0} → lowest {o.Selection.TrainCurve.Min():0.000e0}; without hold-out " +
            $"{all.RtnError:0.000e0} → {all.LearnedError:0.000e0}");
        Assert.True(o.Selection.TrainCurve.Min() < 0.8 * o.Selection.TrainRtnError, "the training rows' error falls");
        Assert.True(o.KeptRtn);
        Assert.Same(rtn, o.Weight);
        Assert.Equal(0, o.Selection.BestStep);
        Assert.Equal(o.RtnError, o.LearnedError);
        Assert.False(all.KeptRtn);
        Assert.True(all.LearnedError < all.RtnError);
    }
}
