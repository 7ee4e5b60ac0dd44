using System.Runtime.InteropServices;
using Google.Protobuf;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Onnx.Proto;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>
/// Small graphs laid out the way older exporters write them (torch.onnx at opset 9, Paddle2ONNX at opset 11): every
/// weight in a Constant node (some behind an Identity), no value_info for intermediate tensors, attributes where later
/// opsets take inputs (Clip min/max at 9, ReduceMean axes, Softmax's coerce-to-2-D axis). Random weights (seeded); they
/// test import normalization, the opset conversion and Conv / MatMul quantization on graphs nobody here exported.
/// <list type="bullet">
/// <item><c>cnn-bn</c> (opset 9): three Conv + BatchNormalization + Relu / Clip blocks, MaxPool, GlobalAveragePool, Flatten,
/// Gemm(transB = 1) head behind an Identity.</item>
/// <item><c>paddle-encoder</c> (opset 11): two transformer encoder layers (MatMul + Add projections, Reshape / Transpose
/// heads, Softmax(axis = 3), decomposed LayerNorm with ReduceMean axes attributes); the layers share their second FFN
/// weight (ALBERT-style parameter sharing: one Constant read by two MatMuls).</item>
/// <item><c>dw-separable</c> (opset 11): a MobileNet-like stem and two depthwise (group = channels) + pointwise blocks with
/// BatchNormalization, Clip with min/max inputs, a MatMul + Add head and Softmax.</item>
/// </list>
/// </summary>
public static class ExportedGraphs
{
    /// <summary>The graphs by name.</summary>
    public static IReadOnlyList<string> Names { get; } = ["cnn-bn", "paddle-encoder", "dw-separable"];

    /// <summary>Builds graph <paramref name="name"/> with weights from <paramref name="seed"/> (the vision graphs take
    /// <paramref name="imageSize"/>² images).</summary>
    public static Model Build(string name, int seed = 7, int imageSize = 32) => name switch
    {
        "cnn-bn" => Cnn(seed, imageSize),
        "paddle-encoder" => Encoder(seed),
        "dw-separable" => DepthwiseSeparable(seed, imageSize),
        _ => throw new Quantc.Onnx.BadInputException($"no exported graph '{name}' (have: {string.Join(", ", Names)})"),
    };

    /// <summary>The graph input's name, shape and the output's name.</summary>
    public static (string Input, long[] Shape, string Output) Signature(string name) => name == "paddle-encoder"
        ? ("x", [1, 16, 32], "y") : ("image", [1, 3, 32, 32], "scores");

    internal sealed class Writer(Graph g, int seed)
    {
        private int _n;
        public Graph G { get; } = g;

        /// <summary>A Constant node holding <paramref name="values"/> (as exporters store weights); its output.</summary>
        public Value Const(string name, long[] dims, float[] values)
        {
            var proto = new TensorProto { DataType = (int)DT.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())) };
            proto.Dims.AddRange(dims);
            var n = G.AddNode("Constant", [], 1, "", $"Constant_{_n++}", [name]);
            n.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = proto });
            return n.Output;
        }

        public Value ConstInts(string name, long[] values)
        {
            var proto = new TensorProto { DataType = (int)DT.Int64, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())) };
            proto.Dims.Add(values.Length);
            var n = G.AddNode("Constant", [], 1, "", $"Constant_{_n++}", [name]);
            n.SetAttribute(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = proto });
            return n.Output;
        }

        public Value Random(string name, long[] dims, double std, double mean = 0)
        {
            long count = dims.Aggregate(1L, (a, b) => a * b);
            var v = new float[count];
            RandomStream.For(seed, name).FillNormal(0, v, std);
            for (int i = 0; i < v.Length; i++) v[i] += (float)mean;
            return Const(name, dims, v);
        }

        public Value Positive(string name, long count)
        {
            var s = RandomStream.For(seed, name);
            return Const(name, [count], Enumerable.Range(0, (int)count).Select(i => (float)(0.5 + s.Uniform(i))).ToArray());
        }

        public Node Op(string op, string name, params Value?[] inputs) => G.AddNode(op, inputs, 1, "", name, [name + "_out"]);

        public Value Conv(string name, Value x, long cin, long cout, long k, long stride = 1, long group = 1, bool bias = true)
        {
            var w = Random(name + ".weight", [cout, cin / group, k, k], Math.Sqrt(2.0 / (cin / group * k * k)));
            var n = Op("Conv", name, bias ? [x, w, Random(name + ".bias", [cout], 0.05)] : [x, w]);
            n.SetAttribute("kernel_shape", new long[] { k, k });
            n.SetAttribute("pads", Enumerable.Repeat(k / 2, 4));
            n.SetAttribute("strides", new long[] { stride, stride });
            if (group != 1) n.SetAttribute("group", group);
            return n.Output;
        }

        public Value BatchNorm(string name, Value x, long c)
        {
            var n = Op("BatchNormalization", name, x, Positive(name + ".weight", c), Random(name + ".bias", [c], 0.1),
                Random(name + ".running_mean", [c], 0.1), Positive(name + ".running_var", c));
            n.SetAttribute("epsilon", 1e-5f);
            return n.Output;
        }

        public Value Linear(string name, Value x, long k, long n)
        {
            var mm = Op("MatMul", name + "/MatMul", x, Random(name + ".weight", [k, n], 1 / Math.Sqrt(k))).Output;
            return Op("Add", name + "/Add", mm, Random(name + ".bias", [n], 0.02)).Output;
        }

        public void Output(Value v, string name, params long[] dims)
        {
            var id = G.AddNode("Identity", [v], 1, "", name + "_identity", [name]);
            id.Output.Type = OnnxBuilder.TensorType(DT.Float, dims.Cast<object>().ToArray());
            G.AddOutput(id.Output);
        }
    }

    internal static Model NewModel(long opset, string producer)
    {
        var m = Model.Create("main", opset, irVersion: opset <= 9 ? 4 : 6);
        m.ProducerName = producer;
        return m;
    }

    private static Model Cnn(int seed, int size)
    {
        var m = NewModel(9, "pytorch");
        var w = new Writer(m.Graph, seed);
        var x = m.Graph.AddInput("image", OnnxBuilder.TensorType(DT.Float, 1, 3, size, size));
        var h = w.Op("Relu", "relu1", w.BatchNorm("bn1", w.Conv("conv1", x, 3, 16, 3), 16)).Output;
        h = w.Op("Relu", "relu2", w.BatchNorm("bn2", w.Conv("conv2", h, 16, 32, 3, stride: 2, bias: false), 32)).Output;
        var pool = w.Op("MaxPool", "pool", h);
        pool.SetAttribute("kernel_shape", new long[] { 2, 2 });
        pool.SetAttribute("strides", new long[] { 2, 2 });
        var clip = w.Op("Clip", "relu6", w.BatchNorm("bn3", w.Conv("conv3", pool.Output, 32, 32, 3), 32));
        clip.SetAttribute("min", 0f);
        clip.SetAttribute("max", 6f);
        var gap = w.Op("GlobalAveragePool", "gap", clip.Output).Output;
        var flat = w.Op("Flatten", "flatten", gap).Output;
        var fcw = w.Op("Identity", "fc.weight_identity", w.Random("fc.weight", [10, 32], 0.2)).Output;
        var fc = w.Op("Gemm", "fc", flat, fcw, w.Random("fc.bias", [10], 0.02));
        fc.SetAttribute("transB", 1L);
        w.Output(fc.Output, "scores", 1, 10);
        return m;
    }

    private static Model DepthwiseSeparable(int seed, int size)
    {
        var m = NewModel(11, "paddle2onnx");
        var w = new Writer(m.Graph, seed);
        var x = m.Graph.AddInput("image", OnnxBuilder.TensorType(DT.Float, 1, 3, size, size));
        var lo = w.Const("relu6.min", [], [0f]);
        var hi = w.Const("relu6.max", [], [6f]);
        var h = w.Op("Clip", "stem.relu6", w.BatchNorm("stem.bn", w.Conv("stem.conv", x, 3, 16, 3, stride: 2), 16), lo, hi).Output;
        long c = 16;
        foreach (var (i, cout, stride) in new[] { (1, 32L, 1L), (2, 64L, 2L) })
        {
            var dw = w.BatchNorm($"block{i}.dw.bn", w.Conv($"block{i}.dw.conv", h, c, c, 3, stride, group: c, bias: false), c);
            h = w.Op("Relu", $"block{i}.dw.relu", dw).Output;
            var pw = w.BatchNorm($"block{i}.pw.bn", w.Conv($"block{i}.pw.conv", h, c, cout, 1, bias: false), cout);
            h = w.Op("Relu", $"block{i}.pw.relu", pw).Output;
            c = cout;
        }
        var gap = w.Op("GlobalAveragePool", "gap", h).Output;
        var flat = w.Op("Reshape", "reshape", gap, w.ConstInts("reshape.shape", [1, c])).Output;
        var logits = w.Linear("head", flat, c, 10);
        var sm = w.Op("Softmax", "softmax", logits);
        sm.SetAttribute("axis", 1L);
        w.Output(sm.Output, "scores", 1, 10);
        return m;
    }

    private static Model Encoder(int seed)
    {
        const long S = 16, H = 32, Heads = 4, D = 8, F = 64;
        var m = NewModel(11, "paddle2onnx");
        var w = new Writer(m.Graph, seed);
        var x = m.Graph.AddInput("x", OnnxBuilder.TensorType(DT.Float, 1, S, H));
        var headShape = w.ConstInts("head_shape", [0, 0, Heads, D]);
        var flatShape = w.ConstInts("flat_shape", [0, 0, H]);
        var scale = w.Const("scale", [], [1f / MathF.Sqrt(D)]);
        var eps = w.Const("eps", [], [1e-5f]);
        var two = w.Const("two", [], [2f]);
        Value? sharedW2 = null;
        var h = x;
        for (int l = 0; l < 2; l++)
        {
            string p = $"encoder.layers.{l}";
            Value Heads4(string what, long[] perm)
            {
                var r = w.Op("Reshape", $"{p}.{what}.reshape", w.Linear($"{p}.self_attn.{what}_proj", h, H, H), headShape).Output;
                var t = w.Op("Transpose", $"{p}.{what}.transpose", r);
                t.SetAttribute("perm", perm);
                return t.Output;
            }
            var q = Heads4("q", [0, 2, 1, 3]);
            var k = Heads4("k", [0, 2, 3, 1]);
            var v = Heads4("v", [0, 2, 1, 3]);
            var scores = w.Op("Mul", $"{p}.scale", w.Op("MatMul", $"{p}.qk", q, k).Output, scale).Output;
            var sm = w.Op("Softmax", $"{p}.softmax", scores);
            sm.SetAttribute("axis", 3L);
            var ctxv = w.Op("Transpose", $"{p}.ctx.transpose", w.Op("MatMul", $"{p}.pv", sm.Output, v).Output);
            ctxv.SetAttribute("perm", new long[] { 0, 2, 1, 3 });
            var merged = w.Op("Reshape", $"{p}.ctx.reshape", ctxv.Output, flatShape).Output;
            var attn = w.Linear($"{p}.self_attn.out_proj", merged, H, H);
            h = LayerNorm(w, $"{p}.norm1", w.Op("Add", $"{p}.residual1", h, attn).Output, H, eps, two);
            var f1 = w.Op("Relu", $"{p}.relu", w.Linear($"{p}.linear1", h, H, F)).Output;
            sharedW2 ??= w.Random("encoder.shared_linear2.weight", [F, H], 1 / Math.Sqrt(F));
            var f2 = w.Op("Add", $"{p}.linear2/Add", w.Op("MatMul", $"{p}.linear2/MatMul", f1, sharedW2).Output,
                w.Random($"{p}.linear2.bias", [H], 0.02)).Output;
            h = LayerNorm(w, $"{p}.norm2", w.Op("Add", $"{p}.residual2", h, f2).Output, H, eps, two);
        }
        w.Output(h, "y", 1, S, H);
        return m;
    }

    /// <summary>LayerNorm as Paddle2ONNX writes it at opset 11: ReduceMean with an axes attribute, Sub, Pow, Add ε, Sqrt, Div, Mul γ,
    /// Add β.</summary>
    private static Value LayerNorm(Writer w, string p, Value x, long h, Value eps, Value two)
    {
        Node Mean(string name, Value v)
        {
            var n = w.Op("ReduceMean", name, v);
            n.SetAttribute("axes", new long[] { -1 });
            n.SetAttribute("keepdims", 1L);
            return n;
        }
        var centered = w.Op("Sub", $"{p}.sub", x, Mean($"{p}.mean", x).Output).Output;
        var variance = Mean($"{p}.var", w.Op("Pow", $"{p}.pow", centered, two).Output).Output;
        var std = w.Op("Sqrt", $"{p}.sqrt", w.Op("Add", $"{p}.add_eps", variance, eps).Output).Output;
        var normed = w.Op("Div", $"{p}.div", centered, std).Output;
        var scaled = w.Op("Mul", $"{p}.mul", normed, w.Positive($"{p}.weight", h)).Output;
        return w.Op("Add", $"{p}.add", scaled, w.Random($"{p}.bias", [h], 0.05)).Output;
    }
}
