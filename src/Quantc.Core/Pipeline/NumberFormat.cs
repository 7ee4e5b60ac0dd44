using Quantc.Core.Numerics;
using Quantc.Onnx;

namespace Quantc.Core.Pipeline;

/// <summary>
/// A number format the plan gives a layer's weights or activations, defined once: its name (as
/// recipes and reports spell it), its grid (the quantized values and their storage type), and its
/// symmetric levels. Compare with the static instances (<c>plan.WeightFormat == NumberFormat.Int4</c>).
/// </summary>
public sealed class NumberFormat
{
    private NumberFormat(string name, QuantFormat? grid, int symmetricLevels)
    {
        Name = name;
        Grid = grid;
        SymmetricLevels = symmetricLevels;
    }

    /// <summary>Not quantized.</summary>
    public static readonly NumberFormat Fp32 = new("fp32", null, 0);

    /// <summary>Half precision (weights stored as float16, cast back to float32 at run time).</summary>
    public static readonly NumberFormat Fp16 = new("fp16", null, 0);

    /// <summary>float8 e4m3fn with a per-tensor scale.</summary>
    public static readonly NumberFormat Fp8 = new("fp8", QuantFormat.Float8E4M3Fn, 0);

    /// <summary>Signed 8-bit integers.</summary>
    public static readonly NumberFormat Int8 = new("int8", QuantFormat.Int8, 127);

    /// <summary>Unsigned 8-bit integers with a zero point (static activations on ONNX Runtime's U8S8 kernel).</summary>
    public static readonly NumberFormat UInt8 = new("uint8", QuantFormat.UInt8, 127);

    /// <summary>A 7-bit signed grid stored in int8 (reduce_range: U8S8 without pair-sum saturation on CPUs without VNNI).</summary>
    public static readonly NumberFormat Int7 = new("int7", QuantFormat.Int7, 63);

    /// <summary>A 6-bit signed grid stored in int8 (OutlierTune's Int6 setting, simulated on int8 storage).</summary>
    public static readonly NumberFormat Int6 = new("int6", QuantFormat.Int6, 31);

    /// <summary>Signed 4-bit integers, packed two per byte.</summary>
    public static readonly NumberFormat Int4 = new("int4", QuantFormat.Int4, 7);

    /// <summary>Every format a plan can hold.</summary>
    public static IReadOnlyList<NumberFormat> All { get; } = [Fp32, Fp16, Fp8, Int8, UInt8, Int7, Int6, Int4];

    /// <summary>The name recipes and reports use (fp32, fp16, fp8, int8, uint8, int7, int6, int4).</summary>
    public string Name { get; }

    /// <summary>The quantized grid and its storage type; null for fp32 and fp16.</summary>
    public QuantFormat? Grid { get; }

    /// <summary>
    /// The largest magnitude of the symmetric integer grid (int8 127, int7 63, int6 31, int4 7); an
    /// unsigned format quantized symmetrically (per-token rows) uses its signed twin's, 127. 0 for
    /// float formats.
    /// </summary>
    public int SymmetricLevels { get; }

    /// <summary>An integer grid (int8, uint8, int7, int6, int4).</summary>
    public bool IsInteger => Grid is { IsFloat: false };

    /// <summary>A signed integer grid stored in int8 (int8, int7, int6): what ONNX Runtime's 8-bit integer kernels take.</summary>
    public bool IsInt8Storage => IsInteger && Grid!.DataType == QuantFormat.Int8.DataType;

    /// <summary>Anything but fp32.</summary>
    public bool IsReduced => this != Fp32;

    /// <summary>The format named <paramref name="name"/>.</summary>
    public static NumberFormat Parse(string name) =>
        All.FirstOrDefault(f => f.Name == name)
            ?? throw new BadInputException($"unknown number format '{name}' ({string.Join(", ", All.Select(f => f.Name))})");

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>How many weights share one scale.</summary>
public enum Granularity
{
    /// <summary>One scale for the tensor.</summary>
    PerTensor,
    /// <summary>One scale per output channel.</summary>
    PerChannel,
    /// <summary>One scale per group of group_size weights along K.</summary>
    PerGroup,
}

/// <summary>When activation scales are fixed.</summary>
public enum ActivationMode
{
    /// <summary>From a calibrated range, at compile time.</summary>
    Static,
    /// <summary>Per token, at run time.</summary>
    Dynamic,
}

/// <summary>The names recipes and reports use for the plan's enums.</summary>
public static class PlanNames
{
    public static string Name(this Granularity g) => g switch
    {
        Granularity.PerTensor => "per_tensor",
        Granularity.PerChannel => "per_channel",
        _ => "per_group",
    };

    public static string Name(this ActivationMode m) => m == ActivationMode.Static ? "static" : "dynamic";

    public static Granularity ParseGranularity(string s) => s switch
    {
        "per_tensor" => Granularity.PerTensor,
        "per_channel" => Granularity.PerChannel,
        "per_group" => Granularity.PerGroup,
        _ => throw new BadInputException($"unknown granularity '{s}' (per_tensor, per_channel, per_group)"),
    };

    public static ActivationMode ParseMode(string s) => s switch
    {
        "static" => ActivationMode.Static,
        "dynamic" => ActivationMode.Dynamic,
        _ => throw new BadInputException($"unknown activation mode '{s}' (static, dynamic)"),
    };
}
