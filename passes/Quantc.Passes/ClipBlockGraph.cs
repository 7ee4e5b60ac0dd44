using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Numerics.Reconstruction;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Ir.Patterns;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>One LLaMA decoder block of the graph as <see cref="ClipBlock"/> computes it: its seven linears (q, k, v, o, gate, up,
/// down), the residual stream value entering it (the first norm's input) and leaving it (the Add after down_proj).</summary>
/// <remarks><see cref="Block"/> computes with the float weights; <see cref="Rounded"/>, when asked for, with the rounded ones.</remarks>
internal sealed record ClipBlockParts(string Name, LinearLayer[] Linears, Value Input, Value Output, ClipBlock Block, ClipBlock? Rounded);

/// <summary>
/// Reads the LLaMA decoder blocks of a model from its map for the block-wise clipping search: layers named
/// <c>….self_attn.{q,k,v,o}_proj</c> and <c>….mlp.{gate,up,down}_proj</c>, q/k/v fed by one RMSNorm and gate/up by another, no
/// biases, full-width rotate-half RoPE on the queries (the table from the graph), the constant prefix ahead of the past key/value
/// cache (PrefixQuant's prefix_tokens; the key prefix brought back from an R3 rotation through the model's cache metadata), an online
/// Hadamard on the o or down input (ai.quantc.Hadamard or a MatMul by a constant). Anything else is a <see cref="BadInputException"/>
/// naming what is missing; what the reading cannot see is caught by comparing the block's float output with ONNX Runtime's.
/// </summary>
internal static class ClipBlockGraph
{
    private static readonly Regex Role = new(@"^(?<block>.+)\.(?:self_attn|mlp)\.(?<role>q|k|v|o|gate|up|down)_proj$",
        RegexOptions.CultureInvariant);

    /// <summary>The model's LLaMA blocks; <paramref name="rounded"/>: whether they compute with each layer's weight rounded to nearest
    /// on its planned integer grid of <paramref name="plan"/> (as <c>weights: {method: rtn}</c> would), else float.</summary>
    public static List<ClipBlockParts> Read(Model model, ModelMap map, QuantPlan plan, bool rounded, string who)
    {
        var byBlock = new Dictionary<string, LinearLayer?[]>(StringComparer.Ordinal);
        foreach (var l in map.Linears)
        {
            var m = Role.Match(l.Name);
            if (!m.Success) continue;
            string key = m.Groups["block"].Value;
            if (!byBlock.TryGetValue(key, out var slots)) byBlock[key] = slots = new LinearLayer?[7];
            slots[Array.IndexOf(LlamaBlock.Roles, m.Groups["role"].Value)] = l;
        }
        if (byBlock.Count == 0)
            throw new BadInputException($"{who}: no LLaMA decoder block in the model (no layers named *.self_attn.q_proj … " +
                "*.mlp.down_proj; " +
                $"linears: {string.Join(", ", map.Linears.Take(4).Select(l => l.Name))}…)");
        var transforms = CacheTransforms.Of(model.Metadata);
        return byBlock.Select(kv => Block(kv.Key, kv.Value, map, transforms, rounded ? plan : null, who)).ToList();
    }

    private static ClipBlockParts Block(string name, LinearLayer?[] slots, ModelMap map, CacheTransforms transforms, QuantPlan? rounding,
        string who)
    {
        string Refuse(string why) => $"{who}: {name} is not a LLaMA-style block: {why}";
        for (int i = 0; i < 7; i++)
            if (slots[i] is null) throw new BadInputException(Refuse($"no {LlamaBlock.Roles[i]}_proj"));
        var l = slots.Select(s => s!).ToArray();
        foreach (var x in l)
            if (x.Bias is not null || x.Conv is not null) throw new BadInputException(Refuse($"{x.Name} has a bias or is a convolution"));
        var norm1 = l[0].FedBy;
        var norm2 = l[4].FedBy;
        if (norm1 is not { Kind: NormKind.RmsNorm } || l[1].FedBy != norm1 || l[2].FedBy != norm1)
            throw new BadInputException(Refuse("q/k/v_proj are not fed by one RMSNorm"));
        if (norm2 is not { Kind: NormKind.RmsNorm } || l[5].FedBy != norm2)
            throw new BadInputException(Refuse("gate/up_proj are not fed by one RMSNorm"));
        if (Math.Abs(norm1.Epsilon - norm2.Epsilon) > 1e-12 * Math.Max(1, norm1.Epsilon))
            throw new BadInputException(Refuse($"its two RMSNorms have different ε ({norm1.Epsilon}, {norm2.Epsilon})"));
        var rope = RopeOf(l[0].Output, map) ?? throw new BadInputException(Refuse("no rotate-half RoPE on q_proj's output"));
        int dh = rope.Half * 2;
        var keyRope = RopeOf(l[1].Output, map);
        if (l[0].OutFeatures % dh != 0 || l[1].OutFeatures % dh != 0 || keyRope is null || keyRope.Half != rope.Half)
            throw new BadInputException(Refuse(
                $"q/k widths {l[0].OutFeatures}/{l[1].OutFeatures} are not whole heads of the RoPE width {dh}"));
        var shape = new LlamaBlockShape((int)l[0].InFeatures, (int)(l[0].OutFeatures / dh), (int)(l[1].OutFeatures / dh), dh,
            (int)l[4].OutFeatures, norm1.Epsilon, 0);
        try { shape.Check(); }
        catch (ArgumentException e) { throw new BadInputException(Refuse(e.Message)); }
        var (cos, sin) = (HalfTable(rope.CosTable, rope.Half), HalfTable(rope.SinTable, rope.Half));
        if (cos is null || sin is null) throw new BadInputException(Refuse("the RoPE tables are not constant [positions, head] tables"));
        int wk = shape.KvHeads * dh;
        var (pk, keyPast) = Prefix(keyRope.Add.Output, wk, dh);
        var (pv, _) = Prefix(l[2].Output, wk, dh);
        if (pk.Length != pv.Length)
            throw new BadInputException(Refuse($"key and value prefixes differ in length ({pk.Length / wk}, {pv.Length / wk})"));
        if (keyPast is not null && transforms.Contains(keyPast)) transforms.ToOriginal(keyPast, pk);
        var output = l[6].Output.Uses is [{ Node: var add }] && add.Is("Add") ? add.Output
            : throw new BadInputException(Refuse("down_proj's output is not added to the residual stream"));
        var (g1, g2) = (norm1.Gamma.Initializer!.ToFloat32(), norm2.Gamma.Initializer!.ToFloat32());
        var (to, td) = (Transform(l[3], Refuse), Transform(l[6], Refuse));
        ClipBlock Make(float[][] w) => new(shape, g1, g2, w, cos, sin, pk, pv, to, td);
        return new ClipBlockParts(name, l, norm1.Input, output, Make(l.Select(KnToNk).ToArray()),
            rounding is null ? null : Make(l.Select(x => Rounded(x, rounding[x.Name])).ToArray()));
    }

    /// <summary>The weight as [N, K] (row o = output channel o).</summary>
    private static float[] KnToNk(LinearLayer l)
    {
        var kn = Weights.Read(l);
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        var nk = new float[kn.Length];
        Gemm.Transpose(kn, nk, k, n);
        return nk;
    }

    /// <summary>The weight [N, K] rounded to nearest on the plan's integer grid and scaled back (float when the plan's weight format is
    /// not an integer grid).</summary>
    private static float[] Rounded(LinearLayer l, LayerPlan p)
    {
        var nk = KnToNk(l);
        if (!p.WeightFormat.IsInteger) return nk;
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        var q = p.WeightSymmetric ? WeightQuantizer.Rtn(nk, n, k, p.WeightFormat.Grid!, p.GroupSize)
            : WeightQuantizer.RtnAsymmetric(nk, n, k, p.WeightFormat.Grid!, p.GroupSize);
        return q.Dequantize();
    }

    /// <summary>The RoPE site on <paramref name="v"/> (a projection's output) after its Reshape and Transpose.</summary>
    private static RopeSite? RopeOf(Value v, ModelMap map)
    {
        for (int step = 0; step < 4; step++)
        {
            if (map.Ropes.FirstOrDefault(r => ReferenceEquals(r.X, v)) is { } site) return site;
            if (v.Uses is not [{ Node: var n }] || !(n.Is("Reshape") || n.Is("Transpose"))) return null;
            v = n.Output;
        }
        return null;
    }

    /// <summary>The first half of each row of a [positions, 2h] table (its halves are equal), or null when not constant.</summary>
    private static float[]? HalfTable(Value table, int half)
    {
        if (Constants.Of(table) is not { } t || t.Dims.Length < 1 || t.ElementCount % (2 * half) != 0) return null;
        var all = t.ToFloat32();
        int rows = all.Length / (2 * half);
        var r = new float[rows * half];
        for (int p = 0; p < rows; p++) Array.Copy(all, p * 2 * half, r, p * half, half);
        return r;
    }

    /// <summary>The constant prefix [o, heads·dh] of the cache this step's keys or values (<paramref name="v"/>, followed through
    /// Reshape / Transpose / Hadamard) are concatenated to, and the past input's name; empty when the cache has no prefix or the block
    /// no cache.</summary>
    private static (float[] Rows, string? Past) Prefix(Value v, int width, int dh)
    {
        for (int step = 0; step < 5; step++)
        {
            var concat = v.Uses.Select(u => u.Node)
                .FirstOrDefault(n => n.Is("Concat") && n.Inputs.Count == 2 && ReferenceEquals(n.Inputs[1], v));
            if (concat is not null)
            {
                var past = PrefixCache.PastBehind(concat.Inputs[0]);
                if (past is null) return ([], null);
                var c = Constants.Of(concat.Inputs[0]!.Producer!.Inputs[0]!.Producer!.Inputs[0])!;
                if (c.Dims is not [1, var heads, var o, var d] || heads * d != width || d != dh)
                    throw new BadInputException($"the prefix cache {Constants.ShapeText(c.Dims)} is not [1, heads, o, {dh}]");
                var data = c.ToFloat32();
                var rows = new float[o * width];
                for (int h = 0; h < heads; h++)
                    for (int p = 0; p < o; p++) Array.Copy(data, (h * o + p) * d, rows, p * width + h * d, d);
                return (rows, past.Name);
            }
            if (v.Uses is not [{ Node: var n }] || !(n.Is("Reshape") || n.Is("Transpose") || n.Is("Hadamard", CustomOps.Domain)
                || n.Is("MatMul"))) return ([], null);
            v = n.Output;
        }
        return ([], null);
    }

    /// <summary>The constant transform T (input · T) between a linear's producer and its input: ai.quantc.Hadamard (H·x per token,
    /// so T = Hᵀ, scaled by 1/√K when normalized) or a MatMul by a constant [K, K]; null when there is none.</summary>
    private static float[]? Transform(LinearLayer l, Func<string, string> refuse)
    {
        int k = (int)l.InFeatures;
        if (l.Input.Producer is not { } p) return null;
        if (p.Is("Hadamard", CustomOps.Domain))
        {
            if (!Hadamard.IsSupported(k)) throw new BadInputException(refuse($"no Hadamard matrix of order {k} for {l.Name}'s input"));
            var h = Hadamard.Matrix(k);
            float scale = p.GetInt("normalize", 0) != 0 ? 1 / MathF.Sqrt(k) : 1;
            var t = new float[h.Length];
            for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) t[j * k + i] = h[i * k + j] * scale;
            return t;
        }
        if (p.Is("MatMul") && Constants.Of(p.Inputs[1]) is { Dims: [var a, var b] } c && a == k && b == k) return c.ToFloat32();
        return null;
    }
}
