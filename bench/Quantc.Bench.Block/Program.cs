using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Quantc.Core.Data;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Models;

// Block-wise against layer-wise learned rounding on a Hugging Face LLaMA checkpoint (int4, group 32, symmetric, as lrq-w4a16),
// with RTN and GPTQ, everything computed by the reconstruction engine's own C# LLaMA block (no ONNX): blocks are quantized in
// order; RTN, GPTQ and layer-wise read the float model's layer inputs (as the weights pass does); block-wise reads the quantized
// previous blocks' output and matches the float block's output. Metrics on held-out text against the float model: logits SQNR,
// top-1 agreement, perplexity, and the residual stream's relative error after each block.
//
// dotnet run -c Release --project bench/Quantc.Bench.Block -- DIR CALIB.txt EVAL.txt [EVAL2.txt] [samples=128] [seq=128]
//   [iters=500] [fp8=1: COAT's FP8 caches and moments; 0: float32] [methods=rtn,gptq,layer-flexround,layer-lrq,block-flexround,block-lrq] [eval_seqs=32]
//   [holdout=0.125: share of the calibration sequences held out to choose the snapshot and stop early; 0: every row]
//   [seed=0: the learned methods' seed (batch order, held-out sequences, LRQ's U)]
var inv = CultureInfo.InvariantCulture;
var opts = args.Where(a => a.Contains('=')).Select(a => a.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
var files = args.Where(a => !a.Contains('=')).ToArray();
if (files.Length < 3) { Console.Error.WriteLine("usage: DIR CALIB.txt EVAL.txt [EVAL2.txt] [key=value ...]"); return 2; }
int samples = int.Parse(opts.GetValueOrDefault("samples", "128"), inv), seq = int.Parse(opts.GetValueOrDefault("seq", "128"), inv);
int iters = int.Parse(opts.GetValueOrDefault("iters", "500"), inv), evalSeqs = int.Parse(opts.GetValueOrDefault("eval_seqs", "32"), inv);
bool fp8 = opts.GetValueOrDefault("fp8", "1") != "0";
double holdout = double.Parse(opts.GetValueOrDefault("holdout", RoundingSettings.DefaultHoldout.ToString(inv)), inv);
int seed = int.Parse(opts.GetValueOrDefault("seed", "0"), inv);
var methods = opts.GetValueOrDefault("methods", "rtn,gptq,layer-flexround,layer-lrq,block-flexround,block-lrq").Split(',');
var model = LlamaCheckpoint.Load(files[0]);
var tok = HfTokenizer.FromFolder(files[0]) ?? throw new InvalidOperationException("no tokenizer");
// Calibration: the text except its last 20 kB (held out when the evaluation text is the same file).
string calibText = File.ReadAllText(files[1]);
string Tail(string t) => t[Math.Max(0, t.Length - 20000)..];
var calib = Chunks(tok, calibText[..Math.Max(0, calibText.Length - 20000)], seq, samples);
var evals = files.Skip(2).Select(f => (Name: Path.GetFileName(f), Seqs: Chunks(tok, f == files[1] ? Tail(calibText)
    : File.ReadAllText(f)[..Math.Min(200000, (int)new FileInfo(f).Length)], seq, evalSeqs))).ToList();
var sh = model.Shape;
Console.WriteLine($"# hidden {sh.Hidden}, heads {sh.Heads}/{sh.KvHeads} kv × {sh.HeadDim}, MLP {sh.Ffn}, {model.Blocks.Count} blocks; " +
    $"calibration {calib.Count} sequences × {seq} tokens = " +
    $"{calib.Count * seq} tokens; {iters} steps per layer/block, holdout {holdout.ToString(inv)}, seed {seed}; " +
    $"eval {string.Join(", ", evals.Select(e => $"{e.Name} " +
    $"{e.Seqs.Count}×{seq}"))}; CPU {Environment.ProcessorCount} threads");
var reference = evals.Select(e => e.Seqs.Select(s => model.Run(s, model.Blocks.Select(b => b.W).ToList())).ToList()).ToList();
foreach (var method in methods)
{
    var clock = Stopwatch.StartNew();
    var chosen = Quantize(model, calib, method, iters, fp8, holdout, seed, out var blockLines);
    double secs = clock.Elapsed.TotalSeconds;
    foreach (var line in blockLines) Console.WriteLine($"  {method}: {line}");
    for (int e = 0; e < evals.Count; e++)
    {
        double sig = 0, noise = 0, nllQ = 0, nllF = 0;
        long agree = 0, count = 0;
        var blockErr = new double[model.Blocks.Count];
        var blockNorm = new double[model.Blocks.Count];
        for (int s = 0; s < evals[e].Seqs.Count; s++)
        {
            var ids = evals[e].Seqs[s];
            var (refLogits, refStream) = reference[e][s];
            var (logits, stream) = model.Run(ids, chosen);
            for (int b = 0; b < blockErr.Length; b++)
                for (int i = 0; i < stream[b].Length; i++)
                {
                    double d = stream[b][i] - refStream[b][i];
                    blockErr[b] += d * d;
                    blockNorm[b] += (double)refStream[b][i] * refStream[b][i];
                }
            int v = model.Vocab;
            for (int t = 0; t < ids.Length; t++)
            {
                int am = 0, bm = 0;
                for (int j = 0; j < v; j++)
                {
                    double d = logits[t * v + j] - refLogits[t * v + j];
                    noise += d * d;
                    sig += (double)refLogits[t * v + j] * refLogits[t * v + j];
                    if (logits[t * v + j] > logits[t * v + am]) am = j;
                    if (refLogits[t * v + j] > refLogits[t * v + bm]) bm = j;
                }
                if (am == bm) agree++;
                count++;
                if (t + 1 < ids.Length)
                {
                    nllQ += Nll(logits, t, v, ids[t + 1]);
                    nllF += Nll(refLogits, t, v, ids[t + 1]);
                }
            }
        }
        long predicted = evals[e].Seqs.Count * (long)(seq - 1);
        Console.WriteLine($"{method,-16} {evals[e].Name,-22} SQNR {10 * Math.Log10(sig / noise),6:0.00} dB  top-1 " +
            $"{100.0 * agree / count,6:0.00} %  ppl {Math.Exp(nllQ / predicted),7:0.0000} (fp32 {Math.Exp(nllF / predicted):0.0000})  " +
            $"stream error by block {string.Join(" ", blockErr.Select((x, b) => (x / blockNorm[b]).ToString("0.00e0", inv)))}  " +
            $"[{secs:0.0} s]");
    }
}
return 0;

static double Nll(float[] logits, int t, int v, int target)
{
    double max = double.NegativeInfinity, sum = 0;
    for (int j = 0; j < v; j++) max = Math.Max(max, logits[t * v + j]);
    for (int j = 0; j < v; j++) sum += Math.Exp(logits[t * v + j] - max);
    return Math.Log(sum) + max - logits[t * v + target];
}

static List<int[]> Chunks(ITokenizer tok, string text, int seq, int count)
{
    var ids = tok.Encode(text);
    var list = new List<int[]>();
    for (int start = 0; list.Count < count && start + seq - 1 <= ids.Length; start += seq - 1)
    {
        var s = new int[seq];
        s[0] = (int)(tok.Bos ?? 1);
        for (int i = 1; i < seq; i++) s[i] = (int)ids[start + i - 1];
        list.Add(s);
    }
    return list;
}

static List<float[][]> Quantize(LlamaCheckpoint model, List<int[]> calib, string method, int iters, bool fp8, double holdout,
    int seed, out List<string> lines)
{
    lines = [];
    var chosen = new List<float[][]>();
    var format = QuantFormat.Parse("int4");
    const int group = 32;
    int d = model.Shape.Hidden;
    var xf = calib.Select(model.Embed).ToList();
    var xq = xf.Select(x => (float[])x.Clone()).ToList();
    bool block = method.StartsWith("block-", StringComparison.Ordinal), learned = method.Contains("round") || method.EndsWith("lrq");
    var rm = method.EndsWith("lrq", StringComparison.Ordinal) ? RoundingMethod.Lrq : RoundingMethod.FlexRound;
    var settings = new RoundingSettings
    {
        Method = rm, Iterations = iters, LearningRate = rm == RoundingMethod.Lrq ? 9e-4 : 3e-3, BatchSamples = 2, Seed = seed,
        Holdout = holdout,
    };
    double total = 0, weightsM = 0, gflops = 0;
    for (int b = 0; b < model.Blocks.Count; b++)
    {
        var (blk, w) = model.Blocks[b];
        var sizes = blk.Shape.LinearSizes;
        var rtn = sizes.Select((s, i) => WeightQuantizer.Rtn(w[i], s.N, s.K, format, group)).ToArray();
        // Float targets and the float layer inputs (taps: q/k/v read H1, o Ctx, gate/up H2, down M).
        var yf = new List<float[]>();
        var taps = new List<float[]>[4] { [], [], [], [] };
        foreach (var x in xf)
        {
            int t = x.Length / d;
            var y = new float[x.Length];
            var tape = blk.Forward(x, t, w, y);
            yf.Add(y);
            taps[0].Add((float[])tape.H1.Clone()); taps[1].Add((float[])tape.Ctx.Clone());
            taps[2].Add((float[])tape.H2.Clone()); taps[3].Add((float[])tape.M.Clone());
        }
        int[] tapOf = [0, 0, 0, 1, 2, 2, 3];
        var clock = Stopwatch.StartNew();
        QuantizedWeight[] q;
        string detail = "";
        if (method == "rtn") q = rtn;
        else if (method == "gptq")
            q = sizes.Select((s, i) => WeightQuantizer.Gptq(w[i], s.N, s.K, Hessian(taps[tapOf[i]], s.K), format, group)).ToArray();
        else if (block && learned)
        {
            var bs = xq.Select((x, i) => fp8 ? new BlockSample(StoredMatrix.PerTensor(x, d), StoredMatrix.PerGroup(yf[i], d, 32))
                : new BlockSample(StoredMatrix.Float32(x, d), StoredMatrix.Float32(yf[i], d))).ToList();
            var o = BlockTrainer.Train(blk, w, rtn, bs, settings with { Fp8Moments = fp8 });
            q = o.Weights;
            gflops += o.LinearGflops;
            var sel = o.Selection;
            detail = $"block error {o.RtnError:0.000e0} (RTN) → {o.LearnedError:0.000e0} on " +
                $"{(sel.Split.Active ? $"the held-out rows ({sel.Split.Describe()})" : $"every row ({sel.Split.Describe()})")}, " +
                $"kept step {sel.BestStep}{(o.KeptRtn ? " (RTN)" : "")}" +
                (sel.Split.Active ? $", training rows {sel.TrainRtnError:0.000e0} → {sel.TrainLearnedError:0.000e0}" : "") +
                $", {o.Iterations} steps{(o.StoppedEarly ? " (early stop)" : "")}, linear GEMM work {o.LinearGflops:0.0} GFLOP/s";
        }
        else if (learned)
        {
            q = new QuantizedWeight[7];
            var parts = new List<string>();
            for (int i = 0; i < 7; i++)
            {
                var cache = taps[tapOf[i]].Select(x => fp8 ? StoredMatrix.PerTensor(x, sizes[i].K) : StoredMatrix.Float32(x, sizes[i].K))
                    .ToList();
                var o = RoundingTrainer.Train(w[i], rtn[i], cache, null, settings with { Seed = seed + i, Fp8Moments = fp8 });
                q[i] = o.Weight;
                gflops += o.GemmGflops / 7;
                parts.Add($"{LlamaBlock.Roles[i]} {o.RtnError:0.00e0}→{o.LearnedError:0.00e0}");
            }
            detail = "layer errors " + string.Join(", ", parts);
        }
        else throw new ArgumentException($"unknown method {method}");
        double secs = clock.Elapsed.TotalSeconds;
        total += secs;
        var wq = q.Select(x => x.Dequantize()).ToArray();
        chosen.Add(wq);
        double m = sizes.Sum(s => (double)s.N * s.K) / 1e6;
        weightsM += m;
        // This block's output error on the calibration rows: quantized model's input and weights vs the float block.
        double err = 0, energy = 0;
        for (int s = 0; s < xq.Count; s++)
        {
            var y = new float[xq[s].Length];
            blk.Forward(xq[s], xq[s].Length / d, wq, y);
            for (int i = 0; i < y.Length; i++)
            {
                err += (double)(y[i] - yf[s][i]) * (y[i] - yf[s][i]);
                energy += (double)(yf[s][i] - xf[s][i]) * (yf[s][i] - xf[s][i]);
            }
            xq[s] = y;
        }
        xf = yf;
        lines.Add($"block {b}: {secs:0.0} s ({secs / m:0.0} s per 1 M weights), output error vs float block {err / energy:0.000e0}" +
            (detail.Length > 0 ? "; " + detail : ""));
    }
    lines.Add($"total {total:0.0} s, {total / weightsM:0.0} s per 1 M weights" +
        (learned ? $", mean GEMM {gflops / model.Blocks.Count:0.0} GFLOP/s" : ""));
    return chosen;
}

static double[] Hessian(List<float[]> xs, int k)
{
    var h = new double[k * k];
    foreach (var x in xs)
    {
        int t = x.Length / k;
        var g = new float[k * k];
        Gemm.Tn(x, x, g, k, t, k);
        for (int i = 0; i < g.Length; i++) h[i] += 2.0 * g[i];
    }
    return h;
}

/// <summary>A LLaMA checkpoint in Hugging Face layout (float32 safetensors, tied or untied head), run with
/// <see cref="LlamaBlock"/>.</summary>
internal sealed class LlamaCheckpoint
{
    public required LlamaBlockShape Shape { get; init; }
    public required List<(LlamaBlock Block, float[][] W)> Blocks { get; init; }
    public required float[] Embedding { get; init; }
    public required float[] Head { get; init; }
    public required float[] FinalNorm { get; init; }
    public int Vocab => Head.Length / Shape.Hidden;

    public static LlamaCheckpoint Load(string dir)
    {
        var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json"))).RootElement;
        int Int(string n) => cfg.GetProperty(n).GetInt32();
        int d = Int("hidden_size"), heads = Int("num_attention_heads");
        var shape = new LlamaBlockShape(d, heads, Int("num_key_value_heads"),
            cfg.TryGetProperty("head_dim", out var hd) ? hd.GetInt32() : d / heads, Int("intermediate_size"),
            (float)cfg.GetProperty("rms_norm_eps").GetDouble(), (float)cfg.GetProperty("rope_theta").GetDouble());
        shape.Check();
        using var ck = SafetensorsCheckpoint.Open(Path.Combine(dir, "model.safetensors"));
        float[] Read(string n)
        {
            var e = ck.Get(n);
            if (e.DType != SafetensorsDType.F32) throw new NotSupportedException($"{n}: float32 only");
            return MemoryMarshal.Cast<byte, float>(e.Data.Span).ToArray();
        }
        var blocks = new List<(LlamaBlock, float[][])>();
        for (int l = 0; l < Int("num_hidden_layers"); l++)
        {
            string p = $"model.layers.{l}.";
            var w = new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj" }.Select(n => Read(p + n + ".weight")).ToArray();
            blocks.Add((new LlamaBlock(shape, Read(p + "input_layernorm.weight"), Read(p + "post_attention_layernorm.weight")), w));
        }
        var emb = Read("model.embed_tokens.weight");
        return new LlamaCheckpoint
        {
            Shape = shape, Blocks = blocks, Embedding = emb, FinalNorm = Read("model.norm.weight"),
            Head = ck.Tensors.ContainsKey("lm_head.weight") ? Read("lm_head.weight") : emb,
        };
    }

    public float[] Embed(int[] ids)
    {
        int d = Shape.Hidden;
        var x = new float[ids.Length * d];
        for (int t = 0; t < ids.Length; t++) Array.Copy(Embedding, ids[t] * d, x, t * d, d);
        return x;
    }

    /// <summary>Logits [t, V] and the residual stream after each block, with the given weights per block.</summary>
    public (float[] Logits, float[][] Stream) Run(int[] ids, List<float[][]> weights)
    {
        int d = Shape.Hidden, t = ids.Length;
        var x = Embed(ids);
        var stream = new float[Blocks.Count][];
        for (int b = 0; b < Blocks.Count; b++)
        {
            var y = new float[x.Length];
            Blocks[b].Block.Forward(x, t, weights[b], y);
            stream[b] = y;
            x = y;
        }
        var h = new float[x.Length];
        BlockOps.RmsNorm(x, FinalNorm, h, new float[t], t, d, Shape.Epsilon);
        var logits = new float[t * Vocab];
        Gemm.Nt(h, Head, logits, t, d, Vocab);
        return (logits, stream);
    }
}
