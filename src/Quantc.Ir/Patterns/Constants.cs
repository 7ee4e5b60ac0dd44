using DT = Quantc.Onnx.Proto.TensorProto.Types.DataType;

namespace Quantc.Ir.Patterns;

/// <summary>Reads constants the way patterns see them: initializers and outputs of Constant nodes.</summary>
public static class Constants
{
    /// <summary>
    /// The constant behind <paramref name="v"/>: its initializer, or the tensor of the Constant node
    /// that produces it (attribute <c>value</c>, <c>value_float(s)</c> or <c>value_int(s)</c>); else null.
    /// </summary>
    public static Tensor? Of(Value? v)
    {
        if (v is null) return null;
        if (v.Initializer is { } t) return t;
        if (v.Producer is not { } p || !p.Is("Constant")) return null;
        if (p.GetTensor("value") is { } value) return value;
        if (p.GetAttribute("value_float")?.Proto is { HasF: true } f) return Tensor.FromFloats(v.Name, [], [f.F]);
        if (p.GetAttribute("value_floats")?.Proto is { } fs && fs.Type == Onnx.Proto.AttributeProto.Types.AttributeType.Floats)
            return Tensor.FromFloats(v.Name, [fs.Floats.Count], fs.Floats.ToArray());
        if (p.GetAttribute("value_int")?.Proto is { HasI: true } i) return Tensor.FromValues<long>(v.Name, (int)DT.Int64, [], [i.I]);
        if (p.GetAttribute("value_ints")?.Proto is { } ints && ints.Type == Onnx.Proto.AttributeProto.Types.AttributeType.Ints)
            return Tensor.FromValues<long>(v.Name, (int)DT.Int64, [ints.Ints.Count], ints.Ints.ToArray());
        return null;
    }

    /// <summary>True when <paramref name="v"/> is an initializer or a Constant node's output.</summary>
    public static bool IsConstant(Value? v) => v is not null && (v.IsInitializer || (v.Producer is { } p && p.Is("Constant")));

    /// <summary>True for element types that convert to float32 (not strings, not complex, not undefined).</summary>
    public static bool IsNumeric(Tensor t) =>
        t.DataType is not ((int)DT.Undefined or (int)DT.String or (int)DT.Complex64 or (int)DT.Complex128);

    /// <summary>True for floating-point element types (float32/64, float16, bfloat16, float8, float4).</summary>
    public static bool IsFloatingPoint(int dataType) => (DT)dataType is DT.Float or DT.Double or DT.Float16 or DT.Bfloat16
        or DT.Float8E4M3Fn or DT.Float8E4M3Fnuz or DT.Float8E5M2 or DT.Float8E5M2Fnuz or DT.Float4E2M1;

    /// <summary>The elements of an integer constant (int64 or int32) as longs, else null.</summary>
    public static long[]? Ints(Tensor? t) => t?.DataType switch
    {
        (int)DT.Int64 => t.AsSpan<long>().ToArray(),
        (int)DT.Int32 => t.AsSpan<int>().ToArray().Select(x => (long)x).ToArray(),
        _ => null,
    };

    /// <summary>A shape as text: [2, 3, 8].</summary>
    public static string ShapeText(IEnumerable<long> dims) => "[" + string.Join(", ", dims) + "]";
}
