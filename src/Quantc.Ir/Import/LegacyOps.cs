using Quantc.Ir.Patterns;
using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Import;

/// <summary>
/// The schema changes of opsets 1–6 that a model crossing opset 7 needs: the consumed_inputs and is_test attributes
/// dropped; the legacy broadcast of the binary ops (broadcast / axis attributes → numpy broadcasting, a constant operand
/// reshaped where its axis is not the trailing one); Gemm's broadcast attribute; Reshape's shape attribute (→ input at 5);
/// Concat's default axis (required from 4); Cast's type name (→ enum at 6); LpPool's float p (→ int at 2).
/// </summary>
internal static class LegacyOps
{
    private static readonly HashSet<string> Binary = new(StringComparer.Ordinal)
        { "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less" };

    /// <summary>Why <paramref name="n"/> of opset <paramref name="from"/> (below 7) cannot be converted, or null.</summary>
    public static string? Refusal(Node n, long from)
    {
        switch (n.OpType)
        {
            case var op when Binary.Contains(op) && n.GetInt("broadcast", 0) == 1 && n.GetAttribute("axis") is not null
                && LegacyShape(n) is null:
                return "legacy broadcast along an axis with operand ranks unknown (no value_info) or a non-constant operand";
            case "Tile" when from < 6:
                return "Tile-1 (tiles, axis) is not converted";
            case "Upsample" when from < 7:
                return "the experimental Upsample-1 is not converted";
            case "PRelu" when Constants.Of(n.Inputs[1]) is not { ElementCount: 1 }:
                return "PRelu-6's slope broadcasting differs from 7's unless the slope is one value";
            case "LSTM" or "GRU" or "RNN" when n.GetAttribute("output_sequence") is not null:
                return "output_sequence was removed at 7";
            case "Cast" when from < 6 && n.GetString("to") is { } name && TypeOf(name) is null:
                return $"Cast to '{name}'";
        }
        return null;
    }

    /// <summary>Rewrites <paramref name="n"/> of opset <paramref name="from"/> for opset 7; true when it changed.</summary>
    public static bool Convert(Graph g, Node n, long from)
    {
        bool changed = n.RemoveAttribute("consumed_inputs");
        if (n.OpType is "Dropout" or "BatchNormalization") changed |= n.RemoveAttribute("is_test");
        switch (n.OpType)
        {
            case var op when Binary.Contains(op):
                if (n.GetInt("broadcast", 0) == 1 && n.GetAttribute("axis") is not null && LegacyShape(n) is { } dims)
                {
                    var b = Constants.Of(n.Inputs[1])!;
                    string name = g.UniqueName(OpsetConverter.Prefix(n) + "_b");
                    var reshaped = g.AddInitializer(Tensor.FromData(name, b.DataType, dims, b.Data));
                    n.SetInput(1, reshaped);
                }
                changed |= n.RemoveAttribute("broadcast") | n.RemoveAttribute("axis");
                break;
            case "Gemm":
                changed |= n.RemoveAttribute("broadcast");
                break;
            case "Reshape" when n.GetInts("shape") is { } shape:
                OpsetConverter.SetInput(n, 1, OpsetConverter.Int64s(g, n, shape.ToArray()));
                n.RemoveAttribute("shape");
                changed = true;
                break;
            case "Concat" when n.GetAttribute("axis") is null:
                n.SetAttribute("axis", 1L);
                changed = true;
                break;
            case "Cast" when n.GetString("to") is { } name:
                n.SetAttribute("to", (long)TypeOf(name)!.Value);
                changed = true;
                break;
            case "LpPool" or "GlobalLpPool" when n.GetAttribute("p")?.Proto is { HasF: true } p:
                n.SetAttribute("p", (long)p.F);
                changed = true;
                break;
        }
        return changed;
    }

    /// <summary>
    /// For a legacy broadcast along axis: the dims of constant B padded with trailing ones so that numpy broadcasting aligns it at
    /// the axis; null when A's rank or B is unknown.
    /// </summary>
    private static long[]? LegacyShape(Node n)
    {
        if (n.Inputs[0]?.Shape is not { } a || Constants.Of(n.Inputs[1]) is not { } b) return null;
        long axis = n.GetInt("axis", 0);
        long trailing = a.Length - axis - b.Dims.Length;
        if (axis < 0 || trailing < 0) return null;
        return [.. b.Dims, .. Enumerable.Repeat(1L, (int)trailing)];
    }

    private static DT? TypeOf(string name) => name.ToUpperInvariant() switch
    {
        "FLOAT" => DT.Float, "UINT8" => DT.Uint8, "INT8" => DT.Int8, "UINT16" => DT.Uint16, "INT16" => DT.Int16,
        "INT32" => DT.Int32, "INT64" => DT.Int64, "BOOL" => DT.Bool, "FLOAT16" => DT.Float16, "DOUBLE" => DT.Double,
        "UINT32" => DT.Uint32, "UINT64" => DT.Uint64, "STRING" => DT.String,
        _ => null,
    };
}
