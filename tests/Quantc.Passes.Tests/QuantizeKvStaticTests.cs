using Quantc.Core.Calibration;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Analysis;
using Quantc.Onnx;
using Xunit.Abstractions;
using static Quantc.Passes.Tests.OrtRuns;

namespace Quantc.Passes.Tests;

/// <summary>
/// quantize_kv's static scales (PrefixQuant): per-head constant scales calibrated with the prefix in place, lowered to
/// QuantizeLinear / DequantizeLinear on the head axis; what enters the cache lies on each head's 4-bit grid, the prefix's
/// keys and values stay as they were, and the log gives the chosen ratios with the measured errors.
/// </summary>
public sealed class QuantizeKvStaticTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-kvstatic");

    public void Dispose() => _dir.Delete(recursive: true);

    [Theory]
    [InlineData("passes: [{prefix_tokens: {tokens: [256, 10]}}, {quantize_kv: {bits: 4, static_scales: true}}]", 2)]
    [InlineData("passes: [{prefix_tokens: {tokens: [256, 10]}}, {quantize_kv: {bits: 4, static_scales: true, per_head: false}}]", 1)]
    [InlineData("passes: [fuse_norm, fuse_rope, fuse_attention, {prefix_tokens: {tokens: [256, 10]}}, " +
        "{quantize_kv: {bits: 4, static_scales: true}}]", 2)]
    public void TheCacheHoldsEachHeadsStaticGrid(string recipe, int scales)
    {
        using var m = LoadLlama(_dir, "torch");
        var ctx = RunRecipe(m, recipe, Calibration(m, 4));
        foreach (var line in ctx.Log.Where(l => l.StartsWith("quantize_kv", StringComparison.Ordinal))) log.WriteLine(line);
        string kind = scales == 1 ? "int4 static per tensor: scales [" : "int4 static per head (2): scales [";
        Assert.Equal(8, ctx.Log.Count(l => l.Contains(kind, StringComparison.Ordinal)));
        Assert.Equal(8, ctx.Log.Count(l => l.EndsWith("(prefix_tokens) stay float32", StringComparison.Ordinal)));
        Assert.Contains(ctx.Log, l => l.StartsWith("quantize_kv: static scales on 8 streams: summed squared error",
            StringComparison.Ordinal));
        var g = m.Graph;
        var qs = g.Nodes.Where(n => n.OpType == "QuantizeLinear").ToList();
        Assert.Equal(8, qs.Count);
        // The prefix constants are read unquantized by the cache Concat.
        Assert.Equal(8, g.Initializers.Count(v => v.Name.StartsWith("prefix_tokens.past_key_values.", StringComparison.Ordinal)
            && v.Uses.All(u => u.Node.OpType == "Expand")));
        var site0 = LayerAnalysis.Analyze(g).Attention[0].Name;
        var q0 = Assert.Single(qs, n => n.Name.StartsWith($"{site0}/keys_static_q4", StringComparison.Ordinal));
        float[] s = Quantc.Ir.Patterns.Constants.Of(q0.Inputs[1])!.ToFloat32();
        var z = Quantc.Ir.Patterns.Constants.Of(q0.Inputs[2])!.AsSpan<byte>().ToArray();
        Assert.Equal(scales, s.Length);
        using var compiled = Model.Load(Save(_dir, m));
        using var session = OrtModel.CreateSession(compiled);
        var tokens = EvalTokens(compiled, 1, 24)[0];
        var key = Outputs(session, CalibrationInputs.FromTokens(compiled.Graph, tokens))["present.0.key"];
        Assert.Equal(2 * 24 * 32, key.Length);
        int offGrid = 0;
        for (int i = 0; i < key.Length; i++)
        {
            int h = scales == 1 ? 0 : i / (24 * 32);
            double q = key[i] / s[h] + z[h];
            if (Math.Abs(q - Math.Round(q)) > 1e-3 || Math.Round(q) is < 0 or > 15) offGrid++;
        }
        Assert.Equal(0, offGrid);
    }

    [Fact]
    public void StaticScalesRefuseTheSymmetricGrid() =>
        Assert.Throws<BadInputException>(() => RunRecipe(LoadLlama(_dir, "torch"),
            "passes: [{quantize_kv: {bits: 4, static_scales: true, symmetric: true}}]"));
}
