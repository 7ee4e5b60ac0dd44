using Quantc.Core.Calibration;
using Quantc.Core.Pipeline;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>quantc's passes and built-in recipes.</summary>
public static class Builtins
{
    /// <summary>Every pass a recipe can name, with its parameters.</summary>
    public static PassRegistry Passes()
    {
        var r = new PassRegistry();
        r.Register(new PassInfo("fold_norm", PassKind.FunctionPreserving, "fold norm γ/β into the linear layers they feed", _ => new FoldNormPass()));
        r.Register(new PassInfo("smooth", PassKind.FunctionPreserving, "SmoothQuant: migrate activation outliers into weights (alpha: a number in [0, 1], or auto — searched per layer group against the W8A8 output error over alpha_grid, default 0.1…0.9, on search_rows sampled calibration rows, default 256; through_mlp; power_of_two)",
            p => SmoothPass.Create(p)));
        r.Register(new PassInfo("symmetrize", PassKind.FunctionPreserving, "OutlierTune: centre each channel's range, shift folded into β and the biases (shift: mean_centre|range_centre)",
            p => new SymmetrizePass(p.GetChoice("shift", "range_centre", "range_centre", "mean_centre") == "mean_centre")));
        r.Register(new PassInfo("online_hadamard", PassKind.FunctionPreserving, "QuaRot R4: Hadamard on the inputs of matching layers (layers: regex, default down_proj$), inverse fused into the weights (portable: MatMul instead of ai.quantc.Hadamard)",
            p => new OnlineHadamardPass(p.GetString("layers", "down_proj$"), p.GetBool("portable", false))));
        r.Register(new PassInfo("rotate_residual", PassKind.FunctionPreserving, "QuaRot R1: rotate the residual stream by a seeded randomised Hadamard fused into the embedding and every layer writing or reading it (needs fold_norm first; seed; rounding: auto|nearest|activation_aware — float32 rounding of the rotated readers aware of massive-activation channels, auto when calibration data is given)",
            p => new RotateResidualPass(p.GetInt("seed", 0), p.GetChoice("rounding", "auto", "auto", "nearest", "activation_aware"))));
        r.Register(new PassInfo("rotate_head", PassKind.FunctionPreserving, "QuaRot R2: per-head randomised Hadamard fused into v_proj's outputs and o_proj's inputs (layers: regex, default v_proj$; seed); the value cache stays rotated",
            p => new RotateHeadPass(p.GetString("layers", "v_proj$"), p.GetInt("seed", 1))));
        r.Register(new PassInfo("rotate_qk", PassKind.FunctionPreserving, "QuaRot R3: online Hadamard per head on the queries and keys after RoPE (eager attention, GroupQueryAttention without do_rotary); the key cache stays rotated (portable: MatMul instead of ai.quantc.Hadamard)",
            p => new RotateQkPass(p.GetBool("portable", false))));
        r.Register(new PassInfo("quantize_kv", PassKind.Lowering, "KV-cache quantization: new keys and values fake-quantized before the cache, asymmetric per token and head (bits: 8|4, default 4; clip_ratio, default 1; keys, values)",
            p => new QuantizeKvPass(KvBits(p.GetInt("bits", 4)), ClipRatio(p.GetDouble("clip_ratio", 1.0)), p.GetBool("keys", true), p.GetBool("values", true))));
        r.Register(new PassInfo("quantize", PassKind.Decision, "base precision of every linear layer (weights: int8|int6|int4|fp8|fp16|fp32, granularity, group_size, symmetric, activations: int8|uint8|int6|fp8|fp32, mode, dynamic, exclude, reduce_range: auto|true|false — 7-bit weights for uint8 activations on CPUs without VNNI)",
            p => new QuantizePass(
                p.GetChoice("weights", "int8", "int8", "int6", "int4", "fp8", "fp16", "fp32"),
                p.GetChoice("granularity", "per_channel", "per_channel", "per_group"),
                p.GetInt("group_size", 128),
                p.GetChoice("activations", "int8", "int8", "uint8", "int6", "fp8", "fp32"),
                p.GetChoice("mode", "static", "static", "dynamic"),
                p.Has("exclude") ? p.GetStrings("exclude") : ["^lm_head$"],
                p.GetStrings("dynamic"),
                p.GetBool("symmetric", true),
                p.GetChoice("reduce_range", "auto", "auto", "true", "false"))));
        r.Register(new PassInfo("spike_mixed", PassKind.Decision, "keep the projections whose inputs carry activation spikes in high precision (threshold, budget, precision: fp16|fp8|fp32 — fp8: float8 e4m3fn weights and static activations with per-tensor scales, keep, force)",
            p => new SpikeMixedPass(p.GetDouble("threshold", 50), p.GetDouble("budget", 0.1), p.GetChoice("precision", "fp16", "fp16", "fp8", "fp32"),
                p.GetStrings("keep"), p.GetStrings("force"))));
        r.Register(new PassInfo("ranges", PassKind.Decision, "static activation ranges (method: minmax|percentile|entropy|mse, percentile)",
            p => new RangesPass(p.GetChoice("method", "minmax", "minmax", "percentile", "entropy", "mse") switch
            {
                "percentile" => RangeMethod.Percentile,
                "entropy" => RangeMethod.Entropy,
                "mse" => RangeMethod.Mse,
                _ => RangeMethod.MinMax,
            }, p.GetDouble("percentile", 99.99))));
        r.Register(new PassInfo("weights", PassKind.Decision, "round the weights (method: rtn|gptq, damp)",
            p => new WeightsPass(p.GetChoice("method", "rtn", "rtn", "gptq"), p.GetDouble("damp", 0.01))));
        r.Register(new PassInfo("lower_matmulnbits", PassKind.Lowering, "emit com.microsoft MatMulNBits for int4 blocked weight-only layers (accuracy_level 0–4); run before lower_qdq",
            p => new LowerMatMulNBitsPass(AccuracyLevel(p.GetInt("accuracy_level", 0)))));
        r.Register(new PassInfo("mamba_ranges", PassKind.Decision, "Quamba: static int8 ranges of every Mamba mixer's conv and scan inputs (x_method: percentile|minmax for the scan's x, x_percentile, default 99.999)",
            p => new MambaRangesPass(p.GetChoice("x_method", "percentile", "percentile", "minmax") == "percentile" ? RangeMethod.Percentile : RangeMethod.MinMax,
                p.GetDouble("x_percentile", 99.999))));
        r.Register(new PassInfo("lower_mamba", PassKind.Lowering, "Mamba: conv → ai.quantc.QCausalConv1d, scan → QSelectiveScan, int8 linear layers → MatMulInt8 (Hadamard in front → HadamardQuantizeInt8); portable: QDQ only",
            p => new LowerMambaPass(p.GetBool("portable", false))));
        r.Register(new PassInfo("lower_qdq", PassKind.Lowering, "emit standard ONNX QDQ (opset 21) that ONNX Runtime fuses", _ => new LowerQdqPass()));
        r.Register(new PassInfo("fuse_attention", PassKind.Lowering, "decomposed attention (MatMul, scale, mask Add, Softmax, MatMul; KV-cache Concat; repeat-kv) → one ONNX Attention (opset 23) that ONNX Runtime runs as a fused kernel, on the 3-D projections when the head split allows; run after fuse_rope (fuse_projections last)",
            _ => new FuseAttentionPass()));
        r.Register(new PassInfo("fuse_norm", PassKind.Lowering, "decomposed RMSNorm / LayerNorm → ONNX RMSNormalization (opset 23) / LayerNormalization, one kernel each; run at the end",
            _ => new FuseNormPass()));
        r.Register(new PassInfo("fuse_projections", PassKind.Lowering, "MatMuls reading the same input (q/k/v, gate/up) → one MatMul on the weights concatenated along N and a Split (float, int8 per-channel or int4 blocked QDQ weights); run last",
            _ => new FuseProjectionsPass()));
        r.Register(new PassInfo("fuse_rope", PassKind.Lowering, "decomposed rotary embedding (x·cos + rotate_half(x)·sin, cos/sin gathered by position) → ONNX RotaryEmbedding (opset 23); run at the end, before fuse_attention",
            _ => new FuseRopePass()));
        r.Register(new PassInfo("lower_w4a8", PassKind.Lowering, "int4 weights × int8 per-token activations as ai.quantc.MatMulInt4Int8 where its schema fits, the rest as lower_qdq (portable: lower_qdq only, standard ONNX)",
            p => new LowerW4A8Pass(p.GetBool("portable", false))));
        return r;
    }

    private static int KvBits(int b) =>
        b is 4 or 8 ? b : throw new BadInputException($"quantize_kv: bits must be 4 or 8, got {b}");

    private static double ClipRatio(double c) =>
        c is > 0 and <= 1 ? c : throw new BadInputException($"quantize_kv: clip_ratio must be in (0, 1], got {c}");

    private static int AccuracyLevel(int a) =>
        a is >= 0 and <= 4 ? a : throw new BadInputException($"lower_matmulnbits: accuracy_level must be 0–4, got {a}");

    /// <summary>
    /// A transformer recipe with the fusion passes that end every one: decomposed norms, RoPE and attention become
    /// single ONNX kernels (fuse_norm, fuse_rope, then fuse_attention, which needs RoPE fused to take 3-D inputs).
    /// </summary>
    private static string Fused(string yaml) => yaml + "\n  - fuse_norm\n  - fuse_rope\n  - fuse_attention\n  - fuse_projections";

    /// <summary>The built-in recipes by name (YAML, as a user would write them).</summary>
    public static IReadOnlyDictionary<string, string> Recipes { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal)
    {
        ["w8a8"] = Fused("""
            name: w8a8
            description: naive baseline — int8 per-channel weights (RTN), uint8 static per-tensor activations (min-max; U8S8, which ONNX Runtime runs as MatMulIntegerToFloat)
            passes:
              - quantize: { weights: int8, activations: uint8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["w8a8-dynamic"] = Fused("""
            name: w8a8-dynamic
            description: baseline — int8 per-channel weights, int8 per-token dynamic activations
            passes:
              - quantize: { weights: int8, activations: int8, mode: dynamic }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["smoothquant"] = Fused("""
            name: smoothquant
            description: SmoothQuant (Xiao et al. 2023) — activation outliers migrated into the weights (α = 0.5), then W8A8 static per-tensor
            passes:
              - smooth: { alpha: 0.5 }
              - quantize: { weights: int8, activations: uint8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["smoothquant-auto"] = Fused("""
            name: smoothquant-auto
            description: SmoothQuant with α searched per layer group (q/k/v, gate/up, down_proj) against the group's W8A8 output error on calibration rows (α 0.1…0.9), then W8A8 static per-tensor
            passes:
              - smooth: { alpha: auto }
              - quantize: { weights: int8, activations: uint8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["outliertune"] = Fused("""
            name: outliertune
            description: OutlierTune — symmetrization (per-channel shift into biases) and per-channel activation scales pre-executed into the weights, then W8A8 static per-tensor
            passes:
              - symmetrize
              - smooth: { alpha: 0.75 }
              - quantize: { weights: int8, activations: uint8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["w6a6-outliertune"] = W6A6OutlierTune(symmetrize: true),
        ["w6a6-outliertune-nosym"] = W6A6OutlierTune(symmetrize: false),
        ["spike-mixed"] = Fused("""
            name: spike-mixed
            description: spike-aware mixed precision — projections whose inputs carry activation spikes stay fp16, the rest W8A8 static
            passes:
              - quantize: { weights: int8, activations: uint8, mode: static }
              - spike_mixed: { threshold: 50, budget: 0.15 }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["hadamard-w8a8"] = Fused("""
            name: hadamard-w8a8
            description: SmoothQuant (α = 0.5), then an online Hadamard rotation of the inputs of down_proj and o_proj (QuaRot R4-style, ai.quantc.Hadamard, inverse fused into the smoothed weights; sizes without a Hadamard matrix are skipped and logged), then W8A8 static. Smoothing runs first so it can still fold down_proj's factors into up_proj
            passes:
              - smooth: { alpha: 0.5 }
              - online_hadamard: { layers: "(down_proj|o_proj)$" }
              - quantize: { weights: int8, activations: uint8, mode: static }
              - ranges: { method: minmax }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["quamba"] = """
            name: quamba
            description: Quamba (Chiang et al. 2024) — Mamba W8A8 static per-tensor; the scan's input x clipped at the 99.999th percentile, out_proj's input (the scan's gated output) in a Hadamard-rotated, outlier-free space; QSelectiveScan, QCausalConv1d and MatMulInt8 (lower_mamba with portable = true emits QDQ only)
            passes:
              - online_hadamard: { layers: "mixer\\.out_proj$" }
              - quantize: { weights: int8, activations: int8, mode: static }
              - ranges: { method: minmax }
              - mamba_ranges: { x_method: percentile, x_percentile: 99.999 }
              - weights: { method: rtn }
              - lower_mamba
            """,
        ["quamba-noclip"] = """
            name: quamba-noclip
            description: Quamba's ablation without percentile clipping — the scan's x min-max; Hadamard before out_proj kept
            passes:
              - online_hadamard: { layers: "mixer\\.out_proj$" }
              - quantize: { weights: int8, activations: int8, mode: static }
              - ranges: { method: minmax }
              - mamba_ranges: { x_method: minmax }
              - weights: { method: rtn }
              - lower_mamba
            """,
        ["quamba-nohadamard"] = """
            name: quamba-nohadamard
            description: Quamba's ablation without the Hadamard before out_proj — percentile clipping of the scan's x kept
            passes:
              - quantize: { weights: int8, activations: int8, mode: static }
              - ranges: { method: minmax }
              - mamba_ranges: { x_method: percentile, x_percentile: 99.999 }
              - weights: { method: rtn }
              - lower_mamba
            """,
        ["mamba-w8a8"] = """
            name: mamba-w8a8
            description: naive static W8A8 for Mamba with Quamba's coverage — linear layers, conv and scan inputs int8 per tensor, all min-max, no rotation (QSelectiveScan, QCausalConv1d, MatMulInt8)
            passes:
              - quantize: { weights: int8, activations: int8, mode: static }
              - ranges: { method: minmax }
              - mamba_ranges: { x_method: minmax }
              - weights: { method: rtn }
              - lower_mamba
            """,
        ["w4a16-rtn"] = Fused("""
            name: w4a16-rtn
            description: int4 weight-only, blocked along K (group 32), round-to-nearest — ONNX Runtime runs it as MatMulNBits
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: fp32 }
              - weights: { method: rtn }
              - lower_qdq
            """),
        ["w4a16-gptq"] = Fused("""
            name: w4a16-gptq
            description: int4 weight-only, blocked along K (group 32), GPTQ — the strong weight-only baseline
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: fp32 }
              - weights: { method: gptq }
              - lower_qdq
            """),
        ["w4a8"] = Fused("""
            name: w4a8
            description: naive W4A8 baseline (no rotation) — int4 weights blocked along K (group 32, GPTQ), int8 per-token dynamic activations; ai.quantc.MatMulInt4Int8 where it fits
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
              - weights: { method: gptq }
              - lower_w4a8
            """),
        ["quarot-w4a8"] = Quarot("quarot-w4a8", "QuaRot (Ashkboos et al. 2024) — norms folded, residual stream rotated (R1), per-head value/output rotation (R2), online Hadamard on queries and keys after RoPE (R3; the key cache stays rotated), online Hadamard on down_proj's input (R4), then int4 weights (group 32, GPTQ) and int8 per-token dynamic activations; ai.quantc.MatMulInt4Int8 where it fits", portable: false, kv4: false),
        ["quarot-w4a8-kv4"] = Quarot("quarot-w4a8-kv4", "quarot-w4a8 with a 4-bit KV cache (QuaRot's W4A8KV4) — R1–R4, int4 weights (group 32, GPTQ), int8 per-token activations, keys (rotated by R3) and values (rotated by R2) fake-quantized to 4 bits asymmetric per token and head, clip ratio 0.95", portable: false, kv4: true),
        ["w4a8-kv4"] = Fused("""
            name: w4a8-kv4
            description: naive W4A8KV4 baseline (no rotation) — w4a8 plus keys and values fake-quantized to 4 bits asymmetric per token and head, clip ratio 0.95
            passes:
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
              - weights: { method: gptq }
              - lower_w4a8
              - quantize_kv: { bits: 4, clip_ratio: 0.95 }
            """),
        ["quarot-w4a8-portable"] = Quarot("quarot-w4a8-portable", "quarot-w4a8 in standard ONNX only — R3 and R4 as a MatMul by a constant Hadamard matrix, int4 blocked DequantizeLinear weights, per-token int8 fake quantization in float ops", portable: true, kv4: false),
    };

    /// <summary>QuaRot's pipeline: R1–R4, int4 GPTQ weights, int8 per-token activations; <paramref name="portable"/>: standard ONNX only; <paramref name="kv4"/>: 4-bit KV cache.</summary>
    private static string Quarot(string name, string description, bool portable, bool kv4)
    {
        string p = portable ? ", portable: true" : "";
        return Fused($$"""
            name: {{name}}
            description: {{description}}
            passes:
              - fold_norm
              - rotate_residual: { seed: 0 }
              - rotate_head: { seed: 1 }
              - rotate_qk{{(portable ? ": { portable: true }" : "")}}
              - online_hadamard: { layers: "down_proj$"{{p}} }
              - quantize: { weights: int4, granularity: per_group, group_size: 32, activations: int8, mode: dynamic }
              - weights: { method: gptq }
              - lower_w4a8{{(portable ? ": { portable: true }" : "")}}{{(kv4 ? "\n  - quantize_kv: { bits: 4, clip_ratio: 0.95 }" : "")}}
            """);
    }

    /// <summary>
    /// OutlierTune's Int6 setting as its reference code runs it: symmetrization (optional, for the ablation),
    /// per-channel activation scales pre-executed into the q/k/v and gate/up (fc1) weights (smooth with α = 1,
    /// exact factors, norm-fed layers only), so those GEMMs see one per-tensor scale; per-token inputs for
    /// o_proj/down_proj (out_proj/fc2); asymmetric per-channel 6-bit weights. The projections whose inputs
    /// carry massive-activation spikes stay fp16 (the reference models cancel them exactly in a later layer,
    /// which a 6-bit grid cannot follow).
    /// </summary>
    private static string W6A6OutlierTune(bool symmetrize) => Fused($$"""
        name: w6a6-outliertune{{(symmetrize ? "" : "-nosym")}}
        description: {{(symmetrize ? "OutlierTune's Int6 setting — symmetrization, per-channel" : "ablation of w6a6-outliertune without symmetrization — per-channel")}} 6-bit activations for the norm-fed q/k/v and gate/up (fc1) inputs with the dequantization pre-executed into the weights (per-tensor scale at run time), per-token 6-bit activations for o_proj/down_proj (out_proj/fc2), 6-bit asymmetric per-channel weights; projections carrying massive-activation spikes stay fp16 (6-bit simulated on int8 storage)
        passes:
        {{(symmetrize ? "  - symmetrize\n" : "")}}  - smooth: { alpha: 1.0, power_of_two: false, through_mlp: false }
          - quantize: { weights: int6, activations: int6, mode: static, symmetric: false, dynamic: ["(o_proj|out_proj|down_proj|fc2)$"] }
          - spike_mixed: { threshold: 50, budget: 0.1 }
          - ranges: { method: minmax }
          - weights: { method: rtn }
          - lower_qdq
        """);

    /// <summary>A built-in recipe by name, or a recipe file by path.</summary>
    public static Recipe Recipe(string nameOrPath)
    {
        if (Recipes.TryGetValue(nameOrPath, out var yaml)) return Core.Pipeline.Recipe.Parse(yaml, $"recipe {nameOrPath}");
        if (File.Exists(nameOrPath)) return Core.Pipeline.Recipe.Load(nameOrPath);
        throw new BadInputException($"unknown recipe '{nameOrPath}' (built in: {string.Join(", ", Recipes.Keys)}; or a YAML file)");
    }
}
