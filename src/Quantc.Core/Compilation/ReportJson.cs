using System.Text.Json;
using System.Text.Json.Serialization;

namespace Quantc.Core.Compilation;

/// <summary>How quantc's reports are written as JSON: indented, snake_case names, a newline at the end.</summary>
public static class ReportJson
{
    /// <summary>The serializer options of every report (snake_case names, indented; nulls written unless a property says
    /// otherwise).</summary>
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
    };

    /// <summary><paramref name="report"/> as indented JSON followed by a newline.</summary>
    public static string Serialize<T>(T report) => JsonSerializer.Serialize(report, Options) + "\n";
}

/// <summary>
/// A measured number in a report: JSON has no infinities, so they are written as the strings "inf" / "-inf", NaN as
/// null, and finite values rounded to 6 decimals.
/// </summary>
public sealed class ReportNumberConverter : JsonConverter<double>
{
    public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType switch
        {
            JsonTokenType.Null => double.NaN,
            JsonTokenType.String => reader.GetString() == "-inf" ? double.NegativeInfinity : double.PositiveInfinity,
            _ => reader.GetDouble(),
        };

    public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
    {
        if (double.IsNaN(value)) writer.WriteNullValue();
        else if (double.IsInfinity(value)) writer.WriteStringValue(value > 0 ? "inf" : "-inf");
        else writer.WriteNumberValue(Math.Round(value, 6));
    }

    /// <summary>A dB value for text: two decimals, "inf" / "-inf" for infinities.</summary>
    public static string Db(double v) => Quantc.Core.Verification.VerifyReport.Db(v);
}
