using Quantc.Ir;
using Quantc.Ir.Building;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Models;

/// <summary>
/// Vision graphs beyond <see cref="ExportedGraphs"/> (same Constant-node weight layout, seeded random weights, opset 13):
/// <list type="bullet">
/// <item><c>upsample-net</c>: a small encoder–decoder: Conv (stride 2) → ConvTranspose (stride 2, with bias) → ConvTranspose
/// (3×3, no bias) → Conv 1×1 as the <c>mask</c> output, and a Gemm without bias (transB = 1) on the pooled features as the
/// <c>scores</c> output.</item>
/// <item><c>resnet-wide</c>: a ResNet-18 layout (stem Conv 7×7 / 2 + MaxPool, four stages of two basic blocks with
/// BatchNormalization and residual Adds, widths 64–512, 1×1 projections where the stride or width changes, Gemm head): the
/// width at which int8 kernels are expected to pay, for latency.</item>
/// <item><c>grouped-upsample</c>: Conv (stride 2) → grouped ConvTranspose (group 4, stride 2, with bias) → depthwise
/// ConvTranspose (group = channels, 3×3) → Conv 1×1 as the <c>mask</c> output: ConvTranspose weights whose axis 1 holds only
/// out/group channels.</item>
/// </list>
/// </summary>
public static class VisionGraphs
{
    /// <summary>The graphs by name.</summary>
    public static IReadOnlyList<string> Names { get; } = ["upsample-net", "resnet-wide", "grouped-upsample"];

    /// <summary>Builds graph <paramref name="name"/> (weights from <paramref name="seed"/>, <paramref name="imageSize"/>² images).
    /// </summary>
    public static Model Build(string name, int seed = 7, int imageSize = 32) => name switch
    {
        "upsample-net" => UpsampleNet(seed, imageSize),
        "resnet-wide" => ResNetWide(seed, imageSize),
        "grouped-upsample" => GroupedUpsample(seed, imageSize),
        _ => throw new Quantc.Onnx.BadInputException($"no vision graph '{name}' (have: {string.Join(", ", Names)})"),
    };

    private static Value ConvTranspose(ExportedGraphs.Writer w, string name, Value x, long cin, long cout, long k, long stride, bool bias,
        long group = 1)
    {
        var weight = w.Random(name + ".weight", [cin, cout / group, k, k], Math.Sqrt(2.0 / (cin / group * k * k)));
        var n = w.Op("ConvTranspose", name, bias ? [x, weight, w.Random(name + ".bias", [cout], 0.05)] : [x, weight]);
        if (group != 1) n.SetAttribute("group", group);
        n.SetAttribute("kernel_shape", new long[] { k, k });
        n.SetAttribute("strides", new long[] { stride, stride });
        long pad = stride == 1 ? k / 2 : 0;
        n.SetAttribute("pads", new long[] { pad, pad, pad, pad });
        return n.Output;
    }

    private static Model UpsampleNet(int seed, int size)
    {
        var m = ExportedGraphs.NewModel(13, "pytorch");
        var w = new ExportedGraphs.Writer(m.Graph, seed);
        var x = m.Graph.AddInput("image", OnnxBuilder.TensorType(DT.Float, 1, 3, size, size));
        var h = w.Op("Relu", "enc.relu", w.Conv("enc.conv", x, 3, 16, 3, stride: 2)).Output;
        var u = w.Op("Relu", "up1.relu", ConvTranspose(w, "up1", h, 16, 8, 2, 2, bias: true)).Output;
        u = w.Op("Relu", "up2.relu", ConvTranspose(w, "up2", u, 8, 8, 3, 1, bias: false)).Output;
        w.Output(w.Conv("mask.conv", u, 8, 2, 1), "mask", 1, 2, size, size);
        var flat = w.Op("Flatten", "flatten", w.Op("GlobalAveragePool", "gap", h).Output).Output;
        var fc = w.Op("Gemm", "fc", flat, w.Random("fc.weight", [10, 16], 0.3));
        fc.SetAttribute("transB", 1L);
        w.Output(fc.Output, "scores", 1, 10);
        return m;
    }

    private static Model GroupedUpsample(int seed, int size)
    {
        var m = ExportedGraphs.NewModel(13, "pytorch");
        var w = new ExportedGraphs.Writer(m.Graph, seed);
        var x = m.Graph.AddInput("image", OnnxBuilder.TensorType(DT.Float, 1, 3, size, size));
        var h = w.Op("Relu", "enc.relu", w.Conv("enc.conv", x, 3, 16, 3, stride: 2)).Output;
        var u = w.Op("Relu", "up1.relu", ConvTranspose(w, "up1", h, 16, 16, 2, 2, bias: true, group: 4)).Output;
        u = w.Op("Relu", "up2.relu", ConvTranspose(w, "up2", u, 16, 16, 3, 1, bias: false, group: 16)).Output;
        w.Output(w.Conv("mask.conv", u, 16, 2, 1), "mask", 1, 2, size, size);
        return m;
    }

    private static Model ResNetWide(int seed, int size)
    {
        var m = ExportedGraphs.NewModel(13, "pytorch");
        var w = new ExportedGraphs.Writer(m.Graph, seed);
        var x = m.Graph.AddInput("image", OnnxBuilder.TensorType(DT.Float, 1, 3, size, size));
        var h = w.Op("Relu", "stem.relu", w.BatchNorm("stem.bn", w.Conv("stem.conv", x, 3, 64, 7, stride: 2, bias: false), 64)).Output;
        var pool = w.Op("MaxPool", "stem.pool", h);
        pool.SetAttribute("kernel_shape", new long[] { 3, 3 });
        pool.SetAttribute("strides", new long[] { 2, 2 });
        pool.SetAttribute("pads", new long[] { 1, 1, 1, 1 });
        h = pool.Output;
        long c = 64;
        foreach (var (stage, width) in new[] { (1, 64L), (2, 128L), (3, 256L), (4, 512L) })
            for (int b = 0; b < 2; b++)
            {
                string p = $"layer{stage}.{b}";
                long stride = stage > 1 && b == 0 ? 2 : 1;
                var conv1 = w.Conv(p + ".conv1", h, c, width, 3, stride, bias: false);
                var a = w.Op("Relu", p + ".relu1", w.BatchNorm(p + ".bn1", conv1, width));
                var y = w.BatchNorm(p + ".bn2", w.Conv(p + ".conv2", a.Output, width, width, 3, bias: false), width);
                var skip = stride != 1 || c != width
                    ? w.BatchNorm(p + ".down.bn", w.Conv(p + ".down.conv", h, c, width, 1, stride, bias: false), width) : h;
                h = w.Op("Relu", p + ".relu2", w.Op("Add", p + ".add", y, skip).Output).Output;
                c = width;
            }
        var flat = w.Op("Flatten", "flatten", w.Op("GlobalAveragePool", "gap", h).Output).Output;
        var fc = w.Op("Gemm", "fc", flat, w.Random("fc.weight", [100, c], 1 / Math.Sqrt(c)), w.Random("fc.bias", [100], 0.02));
        fc.SetAttribute("transB", 1L);
        w.Output(fc.Output, "scores", 1, 100);
        return m;
    }
}
