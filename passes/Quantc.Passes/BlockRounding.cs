using System.Diagnostics;
using System.Globalization;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// FlexRound / LRQ in the weights pass, block-wise (the papers' setting): the model map's decoder blocks (<see cref="DecoderBlock"/>)
/// are recomputed in C# (<see cref="LlamaBlock"/>); the residual stream entering the first block is captured by one calibration
/// run, then block after block the seven linears learn their roundings together (<see cref="BlockTrainer"/>) against the float
/// block's output, from the input the quantized previous blocks give. Before any training, the C# block is checked against ONNX
/// Runtime's output of every block on the first calibration sequence. Layers outside the blocks learn layer by layer; a model
/// without such blocks, or whose blocks cannot be learned together, falls back to layer scope with a notice saying why.
/// </summary>
internal static class BlockRoundingStep
{
    /// <summary>The C# block must reproduce ONNX Runtime's: ‖y_C# − y_ORT‖² / ‖y_ORT − x‖² at most this on the first sequence.</summary>
    public const double MaxMismatch = 1e-6;

    public static Dictionary<string, QuantizedWeight> Run(PassContext ctx, IReadOnlyList<LinearLayer> layers, LearnedRoundingConfig c,
        string pass)
    {
        string tag = $"{pass} ({LearnedRoundingStep.MethodName(c)}, block)";
        if (layers.Count == 0 || ctx.CalibrationData is not { Count: > 0 }) return LearnedRoundingStep.Run(ctx, layers, c, pass);
        var blocks = Blocks(ctx, layers, out string? why);
        if (blocks is null)
        {
            ctx.Notice($"{tag}: scope block does not apply: {why}; learning layer by layer instead");
            return LearnedRoundingStep.Run(ctx, layers, c, pass);
        }
        var streams = Capture(ctx, blocks, pass, out why);
        if (streams is null)
        {
            ctx.Notice($"{tag}: scope block does not apply: {why}; learning layer by layer instead");
            return LearnedRoundingStep.Run(ctx, layers, c, pass);
        }
        var result = Learn(ctx, blocks, streams, c, tag);
        var inBlocks = blocks.SelectMany(b => b.Block.Linears).ToHashSet();
        var rest = layers.Where(l => !inBlocks.Contains(l)).ToList();
        if (rest.Count > 0)
        {
            ctx.Log.Add($"{tag}: {rest.Count} layers outside the decoder blocks ({string.Join(", ", rest.Take(4).Select(l => l.Name))}" +
                $"{(rest.Count > 4 ? ", …" : "")}) learn layer by layer");
            foreach (var (name, w) in LearnedRoundingStep.Run(ctx, rest, c, pass)) result[name] = w;
        }
        return result;
    }

    /// <summary>A decoder block with what the C# engine needs of it; <paramref name="Quantizers"/>: its linears' static input
    /// quantization as the lowering will emit it (W8A8), null when every input stays float.</summary>
    private sealed record Engine(DecoderBlock Block, LlamaBlock Compute, InputQuantizer?[]? Quantizers);

    /// <summary>The decoder blocks with their C# engines, or null with the reason they cannot be learned together.</summary>
    private static List<Engine>? Blocks(PassContext ctx, IReadOnlyList<LinearLayer> layers, out string? why)
    {
        var found = ctx.Map.DecoderBlocksOf(out why);
        if (found is null) return null;
        var learned = layers.ToHashSet();
        var engines = new List<Engine>();
        foreach (var b in found)
        {
            foreach (var l in b.Linears)
            {
                if (!learned.Contains(l))
                {
                    why = $"{l.Name} is not rounded to an integer grid here (a block learns its seven linears together)";
                    return null;
                }
            }
            if (b.MlpNorm.Epsilon != b.AttentionNorm.Epsilon)
            {
                why = $"{b.Name}'s two norms have different ε ({b.AttentionNorm.Epsilon}, {b.MlpNorm.Epsilon})";
                return null;
            }
            var shape = new LlamaBlockShape((int)b.Hidden, b.Heads, b.KvHeads, b.HeadDim, (int)b.Ffn, b.AttentionNorm.Epsilon, 0);
            var compute = new LlamaBlock(shape, b.AttentionNorm.Gamma.Initializer!.ToFloat32(), b.MlpNorm.Gamma.Initializer!.ToFloat32(),
                RopeOf(b.QueryRope));
            var quantizers = b.Linears.Select(l => LearnedRoundingStep.InputQuantizerOf(ctx.Plan[l.Name])).ToArray();
            engines.Add(new Engine(b, compute, quantizers.Any(q => q is not null) ? quantizers : null));
        }
        return engines;
    }

    /// <summary>The RoPE tables [positions, 2h] (halves equal, as the map checked) as [positions, h].</summary>
    private static RopeTable RopeOf(RopeSite r)
    {
        var cos = r.CosTable.Initializer!;
        var sin = r.SinTable.Initializer!.ToFloat32();
        var c = cos.ToFloat32();
        int rows = (int)cos.Dims[0], width = (int)cos.Dims[1], h = r.Half;
        var hc = new float[rows * h];
        var hs = new float[rows * h];
        for (int p = 0; p < rows; p++)
        {
            Array.Copy(c, p * width, hc, p * h, h);
            Array.Copy(sin, p * width, hs, p * h, h);
        }
        return new RopeTable(hc, hs, rows, h);
    }

    /// <summary>The residual stream entering the first block, per calibration sequence ([t, hidden] each), after checking that the C#
    /// blocks reproduce ONNX Runtime's block outputs on the first sequence; null with the reason otherwise.</summary>
    private static List<float[]>? Capture(PassContext ctx, List<Engine> blocks, string pass, out string? why)
    {
        why = null;
        string input = blocks[0].Block.Input.Name;
        var outputs = blocks.Select(b => b.Block.Output.Name).ToList();
        var stream = new List<float[]>();
        var firstOutput = new Dictionary<string, float[]>(StringComparer.Ordinal);
        int hidden = (int)blocks[0].Block.Hidden;
        string? bad = null;
        ctx.Calibrate([input, .. outputs], pass, (name, data, channels) =>
        {
            if (channels != hidden) { lock (stream) bad ??= $"'{name}' has {channels} channels, not {hidden}"; return; }
            if (name == input) lock (stream) stream.Add(data.ToArray());
            else lock (firstOutput) firstOutput.TryAdd(name, data.ToArray());
        });
        if (bad is not null) { why = bad; return null; }
        foreach (var s in ctx.CalibrationData!)
            if (s.Inputs.Values.Any(v => v.Shape.Length > 0 && v.Shape[0] != 1))
            {
                why = "a calibration sample holds more than one sequence (the block engine takes one sequence at a time)";
                return null;
            }
        int longest = stream.Max(x => x.Length / hidden);
        foreach (var b in blocks)
        {
            var rope = b.Block.QueryRope.CosTable.Initializer!.Dims[0];
            if (longest > rope)
            {
                why = $"a calibration sequence of {longest} tokens is longer than the {rope} positions of {b.Block.Name}'s RoPE tables";
                return null;
            }
        }
        // The C# blocks against ONNX Runtime: each block from ONNX Runtime's input, on the first sequence.
        var x = stream[0];
        int t = x.Length / hidden;
        double worst = 0;
        string worstAt = "";
        foreach (var b in blocks)
        {
            var y = new float[x.Length];
            b.Compute.Forward(x, t, FloatWeights(b.Block), y);
            b.Compute.ReleaseTapes();
            MemoryTrim.Now();   // the block's float weights are garbage now: a large model would otherwise pile them up
            var reference = firstOutput[b.Block.Output.Name];
            double err = 0, energy = 0;
            for (int i = 0; i < y.Length; i++)
            {
                err += (double)(y[i] - reference[i]) * (y[i] - reference[i]);
                energy += (double)(reference[i] - x[i]) * (reference[i] - x[i]);
            }
            double rel = err / Math.Max(energy, 1e-30);
            if (!(rel <= worst)) { worst = rel; worstAt = b.Block.Name; }
            if (!(rel <= MaxMismatch))
            {
                why = $"the C# block does not reproduce {b.Block.Name} as ONNX Runtime computes it (relative error {rel:0.###e0} > " +
                    $"{MaxMismatch:0e0} on the first calibration sequence; a non-causal mask or another position scheme?)";
                return null;
            }
            x = reference;
        }
        ctx.Log.Add($"{pass}: the C# decoder block reproduces ONNX Runtime's {blocks.Count} block outputs on the first calibration " +
            $"sequence ({t} tokens): worst relative error {worst:0.###e0} ({worstAt})");
        return stream;
    }

    /// <summary>The seven float weights of a block, [N, K] each, in q, k, v, o, gate, up, down order.</summary>
    private static float[][] FloatWeights(DecoderBlock b) => b.Linears.Select(l => LearnedRoundingStep.ReadNk(l)).ToArray();

    private static Dictionary<string, QuantizedWeight> Learn(PassContext ctx, List<Engine> blocks, List<float[]> stream,
        LearnedRoundingConfig c, string tag)
    {
        var result = new Dictionary<string, QuantizedWeight>(StringComparer.Ordinal);
        int hidden = (int)blocks[0].Block.Hidden, maxT = stream.Max(x => x.Length / hidden);
        long tokens = stream.Sum(x => (long)x.Length / hidden);
        bool quantized = blocks.Any(b => b.Quantizers is not null);
        var settings = c.Settings(quantized);
        // Memory: the float and quantized streams and the float targets (float32), the training copies of inputs and targets
        // (FP8 1×32 groups or float32), and the largest block's training state.
        long streamBytes = 3 * 4 * tokens * hidden;
        long sampleBytes = c.Fp8Cache ? 2 * (tokens * hidden + 4 * tokens * ((hidden + 31) / 32)) : 2 * 4 * tokens * hidden;
        var largest = blocks.MaxBy(b => b.Block.Linears.Sum(l => l.InFeatures * l.OutFeatures))!;
        // One tape and one set of trainer buffers (input, target, output, gradient) per distinct sequence length.
        var lengths = stream.Select(x => x.Length / hidden).Distinct().ToList();
        long train = BlockTrainer.EstimateBytes(largest.Compute.Shape, Rtn(ctx, largest.Block), settings, maxT, quantized)
            + lengths.Sum(t => BlockTape.BytesFor(largest.Compute.Shape, t, quantized) + 16L * t * hidden);
        long weights = blocks.Sum(b => b.Block.Linears.Sum(l => l.InFeatures * l.OutFeatures));
        ctx.Log.Add($"{tag}: memory estimate {Mib(streamBytes + sampleBytes + train)} MiB = residual streams {Mib(streamBytes)} MiB " +
            $"(float, quantized, targets: float32, {tokens} tokens × {hidden}) + block samples {Mib(sampleBytes)} MiB " +
            $"({(c.Fp8Cache ? "FP8 e4m3, 1×32 groups" : "float32")}) + training ≤ {Mib(train)} MiB " +
            $"({(c.Fp8Optimizer ? "FP8 Adam moments" : "float32 Adam moments")}, activations of {lengths.Count} distinct sequence " +
            $"lengths{(lengths.Count > 1 ? ": --no-doc-split makes them one" : "")}); {blocks.Count} blocks, {weights / 1e6:0.###} M " +
            $"weights, {c.Iterations} steps each, batch {c.Batch} sequences; linear work ≤ " +
            $"{LinearWork(c, weights, tokens, stream.Count)} " +
            "TFLOP (forward and backward, before any early stop); " + c.HoldoutLine(stream.Count) +
            (quantized ? "; the linears read their inputs quantized as at run time (static per-tensor; straight-through backward), " +
                "the targets are the float blocks'" : ""));

        var xf = stream;
        var xq = stream;
        var clock = Stopwatch.StartNew();
        double rtnSum = 0, learnedSum = 0, gflops = 0;
        int kept = 0;
        long maxState = 0;
        foreach (var (b, compute, quantizers) in blocks)
        {
            // One block in its own frame: nothing of it (float and dequantized weights, training state) outlives the call.
            var (o, yf, next) = LearnBlock(ctx, b, compute, quantizers, xf, xq, c, settings with { Seed = c.Seed + b.Index }, result,
                $"block {b.Index + 1}/{blocks.Count}");
            MemoryTrim.Now();   // the block's weights, training state and tapes
            xf = yf;
            xq = next;
            rtnSum += o.RtnError;
            learnedSum += o.LearnedError;
            gflops += o.LinearGflops;
            maxState = Math.Max(maxState, o.StateBytes);
            if (o.KeptRtn) kept++;
            string what = LearnedRoundingStep.Describe("block output", o.RtnError, o.LearnedError, o.KeptRtn, o.Curve, o.Selection);
            foreach (var l in b.Linears)
                ctx.Plan[l.Name].Reasons.Add($"{tag}: learned with the six other linears of {b.Name}: {what}, {o.Iterations} steps" +
                    $"{(o.StoppedEarly ? " (early stop)" : "")}{(quantizers is null ? "" : ", inputs quantized as at run time")}");
            ctx.Log.Add($"{tag}: {b.Name} [7 linears, {b.Linears.Sum(l => l.InFeatures * l.OutFeatures) / 1e6:0.###} M weights] {what}; " +
                $"{o.Iterations} steps{(o.StoppedEarly ? " (early stop)" : "")} in {o.Seconds:0.00} s; " +
                $"{LearnedRoundingStep.Curves(o.Curve, o.Selection)}; " +
                $"linear GEMM work {o.LinearGflops:0.0} GFLOP/s");
        }
        double secs = clock.Elapsed.TotalSeconds;
        ctx.Log.Add($"{tag}: {blocks.Count} blocks in {secs:0.0} s ({secs / blocks.Count:0.00} s per block, " +
            $"{secs / (weights / 1e6):0.0} s per 1 M weights); mean block output error (on the samples that chose each block's result) " +
            $"{rtnSum / blocks.Count:0.###e0} (RTN) → " +
            $"{learnedSum / blocks.Count:0.###e0}; {kept} blocks kept RTN; Adam moments ≤ {Mib(maxState)} MiB; linear GEMM work mean " +
            $"{gflops / blocks.Count:0.0} GFLOP/s; process peak working set {Mib(Process.GetCurrentProcess().PeakWorkingSet64)} MiB");
        return result;
    }

    /// <summary>Trains block <paramref name="b"/> on the quantized stream <paramref name="xq"/> against the float block's output of
    /// <paramref name="xf"/>; puts its seven rounded weights into the plan (which spills large ones to the model's spill file: 22
    /// blocks of a 1b model would otherwise hold 1 GB of integers until the pass ends) and into <paramref name="result"/>. Returns
    /// the outcome, the float block's output and the quantized block's output.</summary>
    private static (BlockOutcome Outcome, List<float[]> Yf, List<float[]> Yq) LearnBlock(PassContext ctx, DecoderBlock b,
        LlamaBlock compute, InputQuantizer?[]? quantizers, List<float[]> xf, List<float[]> xq, LearnedRoundingConfig c,
        RoundingSettings settings, Dictionary<string, QuantizedWeight> result, string which)
    {
        int hidden = (int)b.Hidden;
        float[][]? w = FloatWeights(b);
        var rtn = Rtn(ctx, b, w);
        var yf = new List<float[]>(xf.Count);
        foreach (var x in xf) yf.Add(Forward(compute, x, w));
        var samples = new List<BlockSample>(xq.Count);
        for (int i = 0; i < xq.Count; i++)
            samples.Add(c.Fp8Cache
                ? new BlockSample(StoredMatrix.PerGroup(xq[i], hidden, 32), StoredMatrix.PerGroup(yf[i], hidden, 32))
                : new BlockSample(StoredMatrix.Float32(xq[i], hidden), StoredMatrix.Float32(yf[i], hidden)));
        MemoryTrim.Now();   // the copies made reading the float weights, before the training state is allocated
        Quantc.Core.Diagnostics.MemoryTrace.Mark($"{which} weights read");
        var o = BlockTrainer.Train(compute, w, rtn, samples, settings, quantizers);
        Quantc.Core.Diagnostics.MemoryTrace.Mark($"{which} trained");
        compute.ReleaseTapes();
        w = null;
        samples.Clear();
        MemoryTrim.Now();   // the training state and the float weights, before the dequantized weights are made
        var wq = new float[7][];
        for (int i = 0; i < 7; i++) wq[i] = o.Weights[i].Dequantize();
        var yq = new List<float[]>(xq.Count);
        foreach (var x in xq) yq.Add(Forward(compute, x, wq, quantizers));
        compute.ReleaseTapes();
        for (int i = 0; i < 7; i++)
        {
            var plan = ctx.Plan[b.Linears[i].Name];
            plan.QuantizedWeight = o.Weights[i];
            result[b.Linears[i].Name] = plan.QuantizedWeight!;
        }
        return (o with { Weights = [] }, yf, yq);
    }

    /// <summary>6 · tokens · weights per sequence and step: the GEMM work of training every block (a time estimate: divide by the loop's
    /// GFLOP/s, measured per block in the log).</summary>
    private static string LinearWork(LearnedRoundingConfig c, long weights, long tokens, int sequences) =>
        (6.0 * weights * c.Iterations * Math.Min(c.Batch, sequences) * ((double)tokens / sequences) / 1e12)
            .ToString("0.###", CultureInfo.InvariantCulture);

    private static QuantizedWeight[] Rtn(PassContext ctx, DecoderBlock b, float[][]? w = null) =>
        b.Linears.Select((l, i) => LearnedRoundingStep.RtnOf(ctx.Plan[l.Name], w?[i] ?? LearnedRoundingStep.ReadNk(l),
            (int)l.OutFeatures, (int)l.InFeatures)).ToArray();

    private static float[] Forward(LlamaBlock block, float[] x, float[][] w, InputQuantizer?[]? quantizers = null)
    {
        var y = new float[x.Length];
        block.Forward(x, x.Length / block.Shape.Hidden, w, y, 0, quantizers);
        return y;
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.##", CultureInfo.InvariantCulture);
}
