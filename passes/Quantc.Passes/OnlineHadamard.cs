using System.Text.RegularExpressions;
using Quantc.Core.Numerics;
using Quantc.Core.Pipeline;
using Quantc.Core.Runtime;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>
/// OnlineHadamard (QuaRot's R4): for linear layers whose input cannot take a rotation fused into its
/// producer (LLaMA's down_proj reads act(gate) ⊙ up), insert a Hadamard transform on the input,
/// x' = H·x per token (unnormalised: ±1 entries), and fuse the inverse into the weight,
/// W' = H·W / K, so x'·W' = x·HᵀH·W / K = x·W. Keeping the 1/K on the weight side makes it a power of
/// two for power-of-two K, so the rewrite adds no rounding beyond the transform's own sums. Outliers of x are spread over all channels of
/// x', which quantizes far
/// better. Emits ai.quantc.Hadamard, or with <c>portable</c> a MatMul by the constant Hᵀ/√K (standard
/// ONNX, runs anywhere). Function-preserving. <c>layers</c> is a regular expression on layer names.
/// </summary>
public sealed class OnlineHadamardPass(string layers, bool portable) : IPass
{
    /// <summary>The pass's declaration: name, kind, summary and options.</summary>
    public static readonly PassInfo Info = PassInfo.Of<OnlineHadamardOptions>("online_hadamard", PassKind.FunctionPreserving,
        "QuaRot R4: Hadamard on the inputs of matching layers, inverse fused into the weights",
        o => new OnlineHadamardPass(o.Layers, o.Portable));

    public string Name => Info.Name;
    public PassKind Kind => Info.Kind;

    public void Run(PassContext ctx)
    {
        var g = ctx.Model.Graph;
        var map = ctx.Map;
        var rotated = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);
        foreach (var l in map.Linears.Where(l => Regex.IsMatch(l.Name, layers)))
        {
            long k = l.InFeatures;
            if (!Hadamard.IsSupported(k)) { ctx.Log.Add($"online_hadamard: {l.Name} skipped: no Hadamard matrix of order {k}"); continue; }
            if (l.Weight.Uses.Count != 1) { ctx.Log.Add($"online_hadamard: {l.Name} skipped: weight shared"); continue; }
            if (!rotated.TryGetValue(l.Input, out var xr))
            {
                xr = portable ? PortableRotation(g, l, k) : CustomOpRotation(ctx, g, l);
                ctx.Provenance.Record(xr.Name, l.Input.Name + "#hadamard");
                rotated[l.Input] = xr;
            }
            // W' = H·W / K (rows mixed): each column's Hadamard transform, summed in double with the explicit matrix and rounded
            // once, so the fused weight adds no rounding of its own to the float model.
            var w = Weights.Read(l);
            Hadamard.FuseIntoColumns(w, k, l.OutFeatures);
            Weights.Write(g, l, w);
            l.Node.SetInput(0, xr);
            ctx.Plan[l.Name].Transforms.Add(portable ? "online Hadamard (MatMul)" : "online Hadamard");
            ctx.Log.Add($"online_hadamard: {l.Name} (K = {k})");
            ctx.ReleaseLayerCopies();       // the float copy of each layer's weight (a 1b model's piled up to 1.9 GB)
        }
    }

    private static Value CustomOpRotation(PassContext ctx, Graph g, LinearLayer l)
    {
        ctx.Model.SetOpset(CustomOps.Domain, 1);
        var n = new Emitter(g, l.Node, l.Name).Node("Hadamard", CustomOps.Domain, "/hadamard", l.Input);
        n.SetAttribute("normalize", 0L);
        return n.Output;
    }

    private static Value PortableRotation(Graph g, LinearLayer l, long k) => HadamardMatMul(g, l.Input, k, l.Name, l.Node);

    /// <summary>x' = x · Hᵀ·<paramref name="scale"/> (unnormalised, ±1 entries, by default) as a MatMul with a constant [K, K] matrix,
    /// inserted before <paramref name="before"/>.</summary>
    internal static Value HadamardMatMul(Graph g, Value x, long k, string name, Node before, double scale = 1)
    {
        var h = Hadamard.Matrix(k);
        var ht = new float[h.Length];
        for (long i = 0; i < k; i++) for (long j = 0; j < k; j++) ht[j * k + i] = (float)(h[i * k + j] * scale);
        var e = new Emitter(g, before, name);
        var m = g.AddInitializer(Tensor.FromFloats(e.Name(".hadamard"), [k, k], ht));
        return e.Op("MatMul", "/hadamard", x, m);
    }
}

/// <summary>The options of <see cref="OnlineHadamardPass"/>.</summary>
public sealed record OnlineHadamardOptions : PassOptions
{
    [Option("the layers whose inputs are rotated", Regex = true)]
    public string Layers { get; init; } = "down_proj$";

    [Option("a MatMul by the Hadamard matrix instead of ai.quantc.Hadamard (standard ONNX only)")]
    public bool Portable { get; init; }
}
