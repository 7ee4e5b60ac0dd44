using Microsoft.ML.OnnxRuntime;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Tests;

/// <summary>How a decomposed RMSNorm is spelled (the torch.onnx spelling by default).</summary>
public sealed record RmsSpelling
{
    public bool GammaFirst { get; init; }
    public bool UseDiv { get; init; }
    public bool ReciprocalAsDiv { get; init; }
    public bool SquareAsMul { get; init; }
    public bool AxesAsAttribute { get; init; }
    public bool EpsFirst { get; init; }
    public bool CastAround { get; init; }
    public bool EpsAsConstantNode { get; init; }
    public long Axis { get; init; } = -1;
    public long KeepDims { get; init; } = 1;
    public float Exponent { get; init; } = 2f;
    public long[] EpsDims { get; init; } = [];
    public float Epsilon { get; init; } = 1e-6f;
}

/// <summary>Builders for the small graphs the tests analyse and run.</summary>
internal static class TestGraphs
{
    public const int Hidden = 8;
    public const int Ffn = 16;
    public static readonly long[] ActivationShape = [2, 3, Hidden];

    public static TypeProto F32(params long[] dims) => Type(DT.Float, dims);

    public static TypeProto Type(DT elemType, params long[] dims)
    {
        var s = new TensorShapeProto();
        foreach (var d in dims) s.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)elemType, Shape = s } };
    }

    /// <summary>Deterministic pseudo-random floats in [−scale, scale].</summary>
    public static float[] Random(long n, int seed, float scale = 0.5f)
    {
        var rng = new System.Random(seed);
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>An initializer of random values.</summary>
    public static Value Init(Graph g, string name, long[] dims, int seed, float scale = 0.5f, float offset = 0f) =>
        g.AddInitializer(Tensor.FromFloats(name, dims, Random(dims.Aggregate(1L, (a, b) => a * b), seed, scale).Select(v => v + offset).ToArray()), name);

    /// <summary>A γ initializer near 1.</summary>
    public static Value Gamma(Graph g, string name, int seed, long size = Hidden) => Init(g, name, [size], seed, 0.2f, 1f);

    public static Value I64(Graph g, string name, params long[] values) =>
        g.AddInitializer(Tensor.FromValues<long>(name, (int)DT.Int64, [values.Length], values), name);

    public static Node Node(Graph g, string op, string? name, params Value?[] inputs) => g.AddNode(op, inputs, name: name);

    /// <summary>A decomposed RMSNorm of <paramref name="x"/> scaled by <paramref name="gamma"/>, node names under <paramref name="scope"/>.</summary>
    public static Value RmsNorm(Graph g, Value x, string scope, Value gamma, RmsSpelling? spelling = null)
    {
        var s = spelling ?? new RmsSpelling();
        string N(string op) => g.UniqueName($"{scope}/{op}");
        Value C(string what, long[] dims, float[] values) { string n = N(what); return g.AddInitializer(Tensor.FromFloats(n, dims, values), n); }
        var xf = x;
        if (s.CastAround) { var c = g.AddNode("Cast", [x], name: N("Cast")); c.SetAttribute("to", (long)DT.Float); xf = c.Output; }
        Value sq = s.SquareAsMul
            ? g.AddNode("Mul", [xf, xf], name: N("Mul")).Output
            : g.AddNode("Pow", [xf, C("two", [], [s.Exponent])], name: N("Pow")).Output;
        Node mean = s.AxesAsAttribute
            ? g.AddNode("ReduceMean", [sq], name: N("ReduceMean"))
            : g.AddNode("ReduceMean", [sq, I64(g, N("axes"), s.Axis)], name: N("ReduceMean"));
        if (s.AxesAsAttribute) mean.SetAttribute("axes", [s.Axis]);
        mean.SetAttribute("keepdims", s.KeepDims);
        var epsValues = Enumerable.Repeat(s.Epsilon, (int)s.EpsDims.Aggregate(1L, (a, b) => a * b)).ToArray();
        Value eps;
        if (s.EpsAsConstantNode)
        {
            var c = g.AddNode("Constant", [], name: N("Constant"));
            c.SetAttribute("value_float", s.Epsilon);
            eps = c.Output;
        }
        else eps = C("eps", s.EpsDims, epsValues);
        var add = g.AddNode("Add", s.EpsFirst ? [eps, mean.Output] : [mean.Output, eps], name: N("Add"));
        var sqrt = g.AddNode("Sqrt", [add.Output], name: N("Sqrt"));
        Value normed;
        if (s.UseDiv) normed = g.AddNode("Div", [xf, sqrt.Output], name: N("Div")).Output;
        else
        {
            var recip = s.ReciprocalAsDiv
                ? g.AddNode("Div", [C("one", [], [1f]), sqrt.Output], name: N("Div")).Output
                : g.AddNode("Reciprocal", [sqrt.Output], name: N("Reciprocal")).Output;
            normed = g.AddNode("Mul", [xf, recip], name: N("Mul")).Output;
        }
        if (s.CastAround) { var c = g.AddNode("Cast", [normed], name: N("Cast")); c.SetAttribute("to", (long)DT.Float); normed = c.Output; }
        return g.AddNode("Mul", s.GammaFirst ? [gamma, normed] : [normed, gamma], name: N("Mul")).Output;
    }

    /// <summary>MatMul(x, W) named like torch.onnx does: node <c>{scope}/MatMul</c>.</summary>
    public static Value Linear(Graph g, Value x, string scope, string weightName, long inF, long outF, int seed) =>
        g.AddNode("MatMul", [x, Init(g, weightName, [inF, outF], seed)], name: $"{scope}/MatMul").Output;

    /// <summary>
    /// One LLaMA decoder block as torch.onnx exports it: decomposed RMSNorm → q/k/v (generated weight
    /// names, scoped node names), an element-wise stand-in for attention, o_proj, residual; RMSNorm →
    /// gate/up, SiLU(gate)·up → down, residual.
    /// </summary>
    public static Model TorchBlock(RmsSpelling? spelling = null)
    {
        var m = Model.Create(opset: 18);
        var g = m.Graph;
        var x = g.AddInput("hidden_states", F32(ActivationShape));
        const string L = "/model/layers.0";
        var ln1 = RmsNorm(g, x, $"{L}/input_layernorm", Gamma(g, "model.layers.0.input_layernorm.weight", 1), spelling);
        var q = Linear(g, ln1, $"{L}/self_attn/q_proj", "onnx::MatMul_101", Hidden, Hidden, 2);
        var k = Linear(g, ln1, $"{L}/self_attn/k_proj", "onnx::MatMul_102", Hidden, Hidden, 3);
        var v = Linear(g, ln1, $"{L}/self_attn/v_proj", "onnx::MatMul_103", Hidden, Hidden, 4);
        var attn = Node(g, "Add", $"{L}/self_attn/Add", Node(g, "Mul", $"{L}/self_attn/Mul", q, k).Output, v).Output;
        var o = Linear(g, attn, $"{L}/self_attn/o_proj", "model.layers.0.self_attn.o_proj.weight", Hidden, Hidden, 5);
        var h = Node(g, "Add", $"{L}/Add", x, o).Output;
        var ln2 = RmsNorm(g, h, $"{L}/post_attention_layernorm", Gamma(g, "model.layers.0.post_attention_layernorm.weight", 6), spelling);
        var (down, _) = Mlp(g, ln2, L, "onnx::MatMul_");
        g.AddOutput(g.AddNode("Add", [h, down], name: $"{L}/Add_1", outputNames: ["out"]).Output);
        g.Validate();
        return m;
    }

    /// <summary>gate/up → SiLU(gate)·up → down; returns down's output.</summary>
    private static (Value Down, Value Product) Mlp(Graph g, Value x, string layer, string weightPrefix)
    {
        string W(string proj, int id) => weightPrefix == "onnx::MatMul_" ? $"onnx::MatMul_{id}" : $"{weightPrefix}{proj}.MatMul.weight";
        var gate = Linear(g, x, $"{layer}/mlp/gate_proj", W("gate_proj", 105), Hidden, Ffn, 7);
        var up = Linear(g, x, $"{layer}/mlp/up_proj", W("up_proj", 106), Hidden, Ffn, 8);
        var silu = Node(g, "Mul", $"{layer}/mlp/act_fn/Mul", gate, Node(g, "Sigmoid", $"{layer}/mlp/act_fn/Sigmoid", gate).Output).Output;
        var prod = Node(g, "Mul", $"{layer}/mlp/Mul", silu, up).Output;
        return (Linear(g, prod, $"{layer}/mlp/down_proj", W("down_proj", 107), Ffn, Hidden, 9), prod);
    }

    /// <summary>
    /// The same block as ONNX Runtime GenAI's model builder writes it: SimplifiedLayerNormalization
    /// (default domain) → q/k/v, stand-in attention, o_proj, com.microsoft
    /// SkipSimplifiedLayerNormalization (norm and residual sum) → gate/up/down, residual.
    /// </summary>
    public static Model OrtGenAiBlock(string simplifiedDomain = "")
    {
        var m = Model.Create(opset: 21);
        m.SetOpset("com.microsoft", 1);
        var g = m.Graph;
        var x = g.AddInput("hidden_states", F32(ActivationShape));
        const string L = "/model/layers.0";
        const string P = "model.layers.0.";
        var sln = g.AddNode("SimplifiedLayerNormalization", [x, Gamma(g, P + "input_layernorm.weight", 1)], domain: simplifiedDomain, name: $"{L}/input_layernorm/LayerNorm");
        sln.SetAttribute("epsilon", 1e-6f);
        sln.SetAttribute("axis", -1L);
        sln.SetAttribute("stash_type", 1L);
        var ln1 = sln.Output;
        var q = Linear(g, ln1, $"{L}/attn/q_proj", P + "attn.q_proj.MatMul.weight", Hidden, Hidden, 2);
        var k = Linear(g, ln1, $"{L}/attn/k_proj", P + "attn.k_proj.MatMul.weight", Hidden, Hidden, 3);
        var v = Linear(g, ln1, $"{L}/attn/v_proj", P + "attn.v_proj.MatMul.weight", Hidden, Hidden, 4);
        var attn = Node(g, "Add", $"{L}/attn/Add", Node(g, "Mul", $"{L}/attn/Mul", q, k).Output, v).Output;
        var o = Linear(g, attn, $"{L}/attn/o_proj", P + "attn.o_proj.MatMul.weight", Hidden, Hidden, 5);
        var skip = g.AddNode("SkipSimplifiedLayerNormalization", [o, x, Gamma(g, P + "post_attention_layernorm.weight", 6)], domain: "com.microsoft",
            name: $"{L}/post_attention_layernorm/SkipLayerNorm", outputNames: ["ln2", "", "", "residual"]);
        skip.SetAttribute("epsilon", 1e-6f);
        var (down, _) = Mlp(g, skip.Outputs[0]!, L, P + "mlp.");
        g.AddOutput(g.AddNode("Add", [skip.Outputs[3], down], name: $"{L}/Add", outputNames: ["out"]).Output);
        g.Validate();
        return m;
    }

    /// <summary>y = x·W (+ b) as a MatMul and an Add (bias first when <paramref name="biasFirst"/>).</summary>
    public static (Model Model, Node MatMul, Node Add) MatMulBias(bool biasFirst, long[]? biasDims = null)
    {
        var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", F32(2, Hidden));
        var mm = g.AddNode("MatMul", [x, Init(g, "fc.weight", [Hidden, 4], 1)], name: "/fc/MatMul");
        var b = Init(g, "fc.bias", biasDims ?? [4], 2);
        var add = g.AddNode("Add", biasFirst ? [b, mm.Output] : [mm.Output, b], name: "/fc/Add", outputNames: ["y"]);
        g.AddOutput(add.Output);
        return (m, mm, add);
    }

    // ------------------------------------------------------------------ numerics (references for ONNX Runtime runs)

    public static float[] RmsNormRef(float[] x, float[] gamma, float eps)
    {
        int d = gamma.Length;
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / d; r++)
        {
            double ss = 0;
            for (int j = 0; j < d; j++) ss += (double)x[r * d + j] * x[r * d + j];
            double inv = 1 / Math.Sqrt(ss / d + eps);
            for (int j = 0; j < d; j++) y[r * d + j] = (float)(x[r * d + j] * inv * gamma[j]);
        }
        return y;
    }

    public static float[] MatMulRef(float[] x, float[] w, int k, int n)
    {
        int rows = x.Length / k;
        var y = new float[rows * n];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < n; c++)
            {
                double s = 0;
                for (int j = 0; j < k; j++) s += (double)x[r * k + j] * w[j * n + c];
                y[r * n + c] = (float)s;
            }
        return y;
    }

    public static float[] Zip(float[] a, float[] b, Func<float, float, float> f) => a.Zip(b, f).ToArray();

    /// <summary>The block of <see cref="TorchBlock"/>/<see cref="OrtGenAiBlock"/> computed in C# from the model's own initializers.</summary>
    public static float[] BlockRef(Graph g, float[] x, bool genai)
    {
        float[] W(string name) => g[name].Initializer!.ToFloat32();
        string N(string proj, int id, string kind) => genai ? $"model.layers.0.{kind}.{proj}.MatMul.weight" : (proj == "o_proj" ? "model.layers.0.self_attn.o_proj.weight" : $"onnx::MatMul_{id}");
        const float eps = 1e-6f;
        var ln1 = RmsNormRef(x, W("model.layers.0.input_layernorm.weight"), eps);
        var q = MatMulRef(ln1, W(N("q_proj", 101, "attn")), Hidden, Hidden);
        var k = MatMulRef(ln1, W(N("k_proj", 102, "attn")), Hidden, Hidden);
        var v = MatMulRef(ln1, W(N("v_proj", 103, "attn")), Hidden, Hidden);
        var attn = Zip(Zip(q, k, (a, b) => a * b), v, (a, b) => a + b);
        var o = MatMulRef(attn, W(N("o_proj", 104, "attn")), Hidden, Hidden);
        var h = Zip(x, o, (a, b) => a + b);
        var ln2 = RmsNormRef(h, W("model.layers.0.post_attention_layernorm.weight"), eps);
        var gate = MatMulRef(ln2, W(N("gate_proj", 105, "mlp")), Hidden, Ffn);
        var up = MatMulRef(ln2, W(N("up_proj", 106, "mlp")), Hidden, Ffn);
        var prod = Zip(gate.Select(a => a / (1 + MathF.Exp(-a))).ToArray(), up, (a, b) => a * b);
        var down = MatMulRef(prod, W(N("down_proj", 107, "mlp")), Ffn, Hidden);
        return Zip(h, down, (a, b) => a + b);
    }

    /// <summary>Saves <paramref name="model"/> to a temporary folder and runs it in ONNX Runtime on one float input; returns output <paramref name="output"/>.</summary>
    public static float[] RunOrt(Model model, string input, float[] data, long[] shape, string output = "out")
    {
        var dir = Directory.CreateTempSubdirectory("quantc-ir-tests-");
        try
        {
            var path = Path.Combine(dir.FullName, "model.onnx");
            model.Save(path);
            using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, IntraOpNumThreads = 1 };
            using var session = new InferenceSession(path, so);
            using var x = OrtValue.CreateTensorValueFromMemory(data, shape);
            using var ro = new RunOptions();
            using var results = session.Run(ro, [input], [x], [output]);
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally { dir.Delete(recursive: true); }
    }
}
