using System.Text.Json;
using System.Text.Json.Nodes;
using Quantc.Onnx;

namespace Quantc.Core.Calibration;

/// <summary>Saves and loads calibration statistics, so a compile can reuse a calibration run.</summary>
public static class StatsFile
{
    private const string Format = "quantc-calibration-stats/1";

    /// <summary>Writes the statistics as JSON (atomically: temporary file, then rename).</summary>
    public static void Save(string path, IEnumerable<TensorStats> stats)
    {
        var root = new JsonObject { ["format"] = Format };
        var arr = new JsonArray();
        foreach (var s in stats.OrderBy(s => s.Name, StringComparer.Ordinal))
        {
            var (tokenLog, top, sum) = s.State;
            arr.Add(new JsonObject
            {
                ["name"] = s.Name,
                ["min"] = s.Min,
                ["max"] = s.Max,
                ["samples"] = s.Samples,
                ["tokens"] = s.Tokens,
                ["channel_min"] = Arr(s.ChannelMin.ToArray()),
                ["channel_max"] = Arr(s.ChannelMax.ToArray()),
                ["channel_absmax"] = Arr(s.ChannelAbsMax.ToArray()),
                ["channel_sum"] = new JsonArray(sum.Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
                ["hist_range"] = s.Histogram.Range,
                ["hist_count"] = s.Histogram.Count,
                ["hist_bins"] = new JsonArray(s.Histogram.Bins.ToArray().Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
                ["token_log_hist"] = new JsonArray(tokenLog.Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
                ["top_tokens"] = new JsonArray(top.Select(t =>
                    (JsonNode)new JsonObject { ["sample"] = t.Sample, ["token"] = t.Token, ["absmax"] = t.AbsMax }).ToArray()),
            });
        }
        root["tensors"] = arr;
        string full = Path.GetFullPath(path);
        string tmp = OnnxModelWriter.TempPath(Path.GetDirectoryName(full)!);
        try
        {
            File.WriteAllText(tmp, root.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static JsonArray Arr(float[] a) => new(a.Select(x => (JsonNode)JsonValue.Create(x)).ToArray());

    /// <summary>Reads statistics written by <see cref="Save"/>; a damaged file is a <see cref="BadInputException"/>.</summary>
    public static List<TensorStats> Load(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: calibration statistics file not found");
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new BadInputException($"{path}: empty statistics file");
            if ((string?)root["format"] != Format)
                throw new BadInputException($"{path}: not a quantc statistics file (format {(string?)root["format"] ?? "missing"})");
            var result = new List<TensorStats>();
            foreach (var t in root["tensors"]!.AsArray())
            {
                var bins = t!["hist_bins"]!.AsArray().Select(x => (long)x!).ToArray();
                var s = new TensorStats((string)t["name"]!, bins.Length);
                var h = new Histogram(bins, (float)t["hist_range"]!);
                h.SetCount((long)t["hist_count"]!);
                s.Histogram.Merge(h);
                s.Restore((float)t["min"]!, (float)t["max"]!,
                    F(t["channel_min"]!), F(t["channel_max"]!),
                    t["channel_sum"]!.AsArray().Select(x => (double)x!).ToArray(),
                    (long)t["tokens"]!, (int)t["samples"]!,
                    t["token_log_hist"]!.AsArray().Select(x => (long)x!).ToArray(),
                    t["top_tokens"]!.AsArray().Select(x => new TokenSpike((int)x!["sample"]!, (long)x["token"]!, (float)x["absmax"]!)));
                result.Add(s);
            }
            return result;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException
            or ArgumentException)
        {
            throw new BadInputException($"{path}: damaged statistics file ({e.Message.ReplaceLineEndings(" ")})", e);
        }
    }

    private static float[] F(JsonNode n) => n.AsArray().Select(x => (float)x!).ToArray();
}
