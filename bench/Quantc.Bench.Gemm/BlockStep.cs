using System.Diagnostics;
using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;

/// <summary>
/// Where one step of block-wise FlexRound / LRQ spends its time, at a chosen block shape (default: the 1b reference llama's,
/// hidden 2048, 32 / 4 heads of 64, MLP 5632) with random weights and inputs: the block's forward and backward per sequence
/// (split into matrix products, counted by <see cref="Gemm.Counters"/>, attention, and the rest), the rounding layers'
/// reconstruction Ŵ(θ) and its backward, and Adam — the same calls, in the same order, as <see cref="BlockTrainer"/>'s step.
/// </summary>
internal static class BlockStep
{
    public static void Run(Dictionary<string, string> o, double peak)
    {
        var inv = CultureInfo.InvariantCulture;
        int I(string k, int d) => o.TryGetValue(k, out var v) ? int.Parse(v, inv) : d;
        var shape = new LlamaBlockShape(I("hidden", 2048), I("heads", 32), I("kv", 4), I("hd", 64), I("ffn", 5632), 1e-5f, 10000);
        int t = I("t", 128), batch = I("batch", 2), steps = I("steps", 3);
        if (o.TryGetValue("threads", out var th)) Gemm.MaxThreads = int.Parse(th, inv);
        var method = o.GetValueOrDefault("method", "lrq") == "lrq" ? RoundingMethod.Lrq : RoundingMethod.FlexRound;
        bool fp8 = o.GetValueOrDefault("fp8", "1") == "1";
        var rng = new Random(7);
        float[] R(long n, float scale)
        {
            var x = new float[n];
            for (long i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
            return x;
        }
        var sizes = shape.LinearSizes;
        var w = sizes.Select(z => R((long)z.N * z.K, 0.03f)).ToArray();
        var rtn = sizes.Select((z, i) => WeightQuantizer.Rtn(w[i], z.N, z.K, QuantFormat.Parse("int4"), 32)).ToArray();
        var block = new LlamaBlock(shape, Enumerable.Repeat(1f, shape.Hidden).ToArray(), Enumerable.Repeat(1f, shape.Hidden).ToArray());
        var s = new RoundingSettings { Method = method, Iterations = 5000, Fp8Moments = fp8 };
        var layers = new RoundingLayer[7];
        var adams = new Adam[7];
        var grads = new float[7][];
        var dw = new float[7][];
        for (int i = 0; i < 7; i++)
        {
            layers[i] = new RoundingLayer(w[i], rtn[i], method, s.RankFor(sizes[i].N, sizes[i].K), i);
            adams[i] = new Adam(layers[i].ParameterCount, 1e-3, 5000, fp8);
            grads[i] = new float[layers[i].ParameterCount];
            dw[i] = new float[sizes[i].N * sizes[i].K];
            layers[i].Forward();
        }
        var what = layers.Select(l => l.Weights).ToArray();
        int d = shape.Hidden;
        var xs = Enumerable.Range(0, batch).Select(_ => R((long)t * d, 1)).ToArray();
        var y = new float[t * d];
        var g = new float[t * d];
        long macs = sizes.Sum(z => (long)z.N * z.K);
        var phase = new Dictionary<string, double>();
        void Add(string k, double v) => phase[k] = phase.GetValueOrDefault(k) + v;
        double Since(long start) => (Stopwatch.GetTimestamp() - start) / (double)Stopwatch.Frequency;
        Console.WriteLine(string.Create(inv, $"# block step: hidden {shape.Hidden}, heads {shape.Heads}/{shape.KvHeads}×" +
            $"{shape.HeadDim}, MLP {shape.Ffn}, {macs / 1e6:0.##} M weights, {method}, rank(gate) {s.RankFor(sizes[4].N, sizes[4].K)}, " +
            $"batch {batch} × {t} tokens, FP8 moments {fp8}, {steps} steps after one warm-up; threads {Gemm.MaxThreads}; load average " +
            $"{File.ReadAllText("/proc/loadavg").Split(' ')[0]}"));
        for (int step = 0; step <= steps; step++)
        {
            if (step == 1) phase.Clear();
            var step0 = Stopwatch.GetTimestamp();
            foreach (var a in dw) Array.Clear(a);
            foreach (var x in xs)
            {
                var (gs0, gm0) = Gemm.Counters;
                long st = Stopwatch.GetTimestamp();
                var tape = block.Forward(x, t, what, y);
                Add("block forward", Since(st));
                for (int i = 0; i < g.Length; i++) g[i] = 1e-4f * (y[i] - x[i]);
                st = Stopwatch.GetTimestamp();
                block.Backward(tape, what, g, dw, null);
                Add("block backward", Since(st));
                var (gs1, gm1) = Gemm.Counters;
                Add("  of which block GEMMs", gs1 - gs0);
                Add("block GEMM multiply-adds", gm1 - gm0);
                st = Stopwatch.GetTimestamp();
                BlockOps.Attention(tape.Q, tape.K, tape.V, tape.Ctx, tape.Probs, t, shape.Heads, shape.KvHeads, shape.HeadDim);
                Add("  of which attention forward (timed again)", Since(st));
                st = Stopwatch.GetTimestamp();
                BlockOps.AttentionBackward(tape.Q, tape.K, tape.V, tape.Probs, tape.DCtx, tape.DQ, tape.DK, tape.DV, t, shape.Heads,
                    shape.KvHeads, shape.HeadDim);
                Add("  of which attention backward (timed again)", Since(st));
            }
            for (int i = 0; i < 7; i++)
            {
                var (gs0, _) = Gemm.Counters;
                long st = Stopwatch.GetTimestamp();
                layers[i].Backward(dw[i], grads[i]);
                Add("rounding backward ∂θ", Since(st));
                st = Stopwatch.GetTimestamp();
                adams[i].Step(layers[i].Theta, grads[i]);
                Add("Adam", Since(st));
                st = Stopwatch.GetTimestamp();
                layers[i].Forward();
                Add("rounding forward Ŵ(θ)", Since(st));
                Add("  of which LRQ L·U GEMMs", Gemm.Counters.Seconds - gs0);
            }
            Add("step", Since(step0));
        }
        double stepS = phase["step"] / steps;
        double linear = 6.0 * macs * t * batch;
        Console.WriteLine("| phase | s per step | share |");
        Console.WriteLine("|---|---:|---:|");
        foreach (var (k, v) in phase.Where(p => p.Key != "block GEMM multiply-adds"))
            Console.WriteLine(string.Create(inv, $"| {k} | {v / steps:0.000} | {v / phase["step"]:P0} |"));
        double gemmRate = 2 * phase["block GEMM multiply-adds"] / phase["  of which block GEMMs"] / 1e9;
        Console.WriteLine(string.Create(inv, $"step {stepS:0.000} s = {stepS / (macs / 1e6):0.0000} s per 1 M weights; block linear work " +
            $"{linear / 1e9:0.0} GFLOP per step = {linear / stepS / 1e9:0.0} GFLOP/s over the whole step " +
            $"({linear / stepS / 1e9 / peak:P1} of the measured peak {peak:0}); block GEMMs alone {gemmRate:0.0} GFLOP/s " +
            $"({gemmRate / peak:P1})"));
    }
}
