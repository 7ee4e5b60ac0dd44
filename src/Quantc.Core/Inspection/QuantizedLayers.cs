using Quantc.Ir;
using Quantc.Onnx;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Core.Inspection;

/// <summary>One quantized linear layer of a compiled model: the kernel it runs on, its weight and activation formats.</summary>
public sealed record QuantizedLayerEntry(string Name, string Op, string Weights, string Activations);

/// <summary>
/// Finds the quantized linear layers of a model by the forms a compile leaves: DequantizeLinear(integer or float8
/// initializer) → MatMul / Gemm (per-channel, per-tensor or blocked), Cast(fp16 initializer) → MatMul,
/// com.microsoft MatMulIntegerToFloat / DynamicQuantizeMatMul / MatMulNBits, and ai.quantc MatMul* ops.
/// </summary>
public static class QuantizedLayers
{
    /// <summary>The quantized linear layers of <paramref name="model"/>, in graph order.</summary>
    public static IReadOnlyList<QuantizedLayerEntry> Find(Model model)
    {
        var found = new List<QuantizedLayerEntry>();
        foreach (var n in model.Graph.AllNodes())
        {
            string op = n.IsOnnxDomain ? n.OpType : $"{n.Domain}.{n.OpType}";
            if (n.Is("MatMul") || n.Is("Gemm"))
            {
                if (n.Inputs.Count < 2 || n.Inputs[1]?.Producer is not { } w) continue;
                string? weights = w.OpType switch
                {
                    "DequantizeLinear" when w.Inputs[0] is { IsInitializer: true } q =>
                        $"{DataTypes.Name(q.Initializer!.DataType)} {Granularity(w, q)}",
                    "Cast" when w.Inputs[0] is { IsInitializer: true } h && h.Initializer!.DataType == (int)DT.Float16 => "float16",
                    _ => null,
                };
                if (weights is null) continue;
                found.Add(new QuantizedLayerEntry(LayerName(n, w.Inputs[0]!), op, weights, Activations(n.Inputs[0])));
            }
            else if (n.Is("MatMulNBits", "com.microsoft"))
                found.Add(new QuantizedLayerEntry(LayerName(n, n.Inputs[1]), op,
                    $"int{n.GetInt("bits", 4)} blocks of {n.GetInt("block_size", 0)}",
                    $"accuracy_level {n.GetInt("accuracy_level", 0)}"));
            else if (n.Is("MatMulIntegerToFloat", "com.microsoft"))
                found.Add(new QuantizedLayerEntry(LayerName(n, n.Inputs[1]), op,
                    $"{Type(n.Inputs[1])} (scale {Shape(n.Inputs.Count > 3 ? n.Inputs[3] : null)})",
                    $"{Type(n.Inputs[0])} (integer)"));
            else if (n.Is("DynamicQuantizeMatMul", "com.microsoft"))
                found.Add(new QuantizedLayerEntry(LayerName(n, n.Inputs[1]), op, Type(n.Inputs[1]), "uint8 dynamic per tensor"));
            // MatMulInt8, MatMulInt4Int8, MatMulInt4Fp8 and the fused forms HadamardMatMulInt4Int8 and SwiGluMatMulInt4Int8
            else if (n.Domain == "ai.quantc" && n.OpType.Contains("MatMul", StringComparison.Ordinal))
                found.Add(new QuantizedLayerEntry(LayerName(n, n.Inputs.Count > 2 ? n.Inputs[2] : null), op,
                    n.GetInt("group_size", 0) is > 0 and var gs ? $"int4 groups of {gs}"
                        : n.OpType.Contains("Int4", StringComparison.Ordinal) ? "int4" : "int8",
                    n.OpType.EndsWith("Int8", StringComparison.Ordinal) ? "int8" : "float"));
        }
        return found;
    }

    private static string Granularity(Node dq, Value q)
    {
        var scale = dq.Inputs.Count > 1 ? dq.Inputs[1]?.Initializer : null;
        if (scale is null || scale.ElementCount == 1) return "per tensor";
        long block = dq.GetInt("block_size", 0);
        return block > 0 ? $"blocks of {block}" : "per channel";
    }

    /// <summary>What feeds the layer's input: QDQ (static, with its type), a per-token QDQ behind a division, or float.</summary>
    private static string Activations(Value? x)
    {
        if (x?.Producer is not { } dq || !dq.Is("DequantizeLinear") || dq.Inputs[0]?.Producer is not { } q || !q.Is("QuantizeLinear"))
            return "float";
        string type = q.Inputs.Count > 2 && q.Inputs[2] is { } zp ? Type(zp) : "uint8";
        return q.Inputs[0]?.Producer is { } div && div.Is("Div") ? $"{type} per token" : $"{type} static";
    }

    private static string Type(Value? v) => v?.Initializer is { } t ? DataTypes.Name(t.DataType) : v?.Type?.TensorType is { } tt
        ? DataTypes.Name(tt.ElemType) : "?";

    private static string Shape(Value? v) => v?.Initializer is { } t ? "[" + string.Join(", ", t.Dims) + "]" : "?";

    /// <summary>The layer's name: the weight initializer's name up to ".weight", else the node's name.</summary>
    private static string LayerName(Node n, Value? weight)
    {
        if (weight is not null)
        {
            int at = weight.Name.LastIndexOf(".weight", StringComparison.Ordinal);
            if (at > 0) return weight.Name[..at];
        }
        return n.Name.Length > 0 ? n.Name : n.Output.Name;
    }
}
