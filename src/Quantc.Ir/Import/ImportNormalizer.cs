using System.Globalization;
using Quantc.Ir.Patterns;

namespace Quantc.Ir.Import;

/// <summary>What <see cref="ImportNormalizer.Run"/> did to a model.</summary>
/// <param name="ConstantsToInitializers">Constant nodes whose tensor became an initializer.</param>
/// <param name="IdentitiesFolded">Identity nodes on constants removed (their readers read the constant).</param>
/// <param name="SharedWeights">Weights read by more than one linear-like node (MatMul, Gemm, Conv, ConvTranspose).</param>
/// <param name="SharedReaders">The linear-like nodes that read them.</param>
/// <param name="BatchNormsFolded">BatchNormalization nodes folded into the Conv before them.</param>
public sealed record ImportSummary(int ConstantsToInitializers, int IdentitiesFolded, int SharedWeights, int SharedReaders,
    int BatchNormsFolded)
{
    /// <summary>True when the model was already in normal form.</summary>
    public bool NothingDone => ConstantsToInitializers == 0 && IdentitiesFolded == 0 && BatchNormsFolded == 0;

    /// <summary>One line for the compile log.</summary>
    public string Describe() => NothingDone
        ? "import: already normal (no Constant-node tensors, no Identity on constants, no BatchNormalization after a Conv)" + Shared
        : string.Create(CultureInfo.InvariantCulture,
            $"import: {ConstantsToInitializers} Constant node(s) → initializers, {IdentitiesFolded} Identity node(s) on constants " +
            $"folded, {BatchNormsFolded} BatchNormalization(s) folded into the Conv before them") + Shared;

    private string Shared => SharedWeights == 0 ? "; no weight shared between layers"
        : $"; {SharedWeights} weight(s) shared by {SharedReaders} layers (a pass that rewrites one layer's weight gives it its own copy; " +
            "lower_qdq stores one quantized copy where the layers' quantized weights are equal)";
}

/// <summary>
/// The function-preserving first step of every compile, for graphs as exporters write them (Paddle2ONNX, older torch
/// exporters): Constant nodes that hold a tensor become initializers (so that the model map sees their weights);
/// Identity nodes whose input is a constant are folded (their readers read the constant itself); weights read by several
/// linear-like nodes (an exporter's deduplicated constant, ALBERT-style sharing) are counted and reported — the passes
/// that rewrite a weight copy it first for the layer they change, and lower_qdq keeps one quantized copy when the
/// layers' quantized weights are equal.
/// A BatchNormalization (inference form: one output) whose input is a Conv's output read by nothing else, with constant
/// parameters, is folded into that Conv: W'[o] = W[o]·γ[o]/√(σ²[o]+ε), B'[o] = (B[o]−μ[o])·γ[o]/√(σ²[o]+ε) + β[o] (new
/// initializers, computed in double), so that the Conv is the layer that gets quantized.
/// Values that are graph outputs are left as they are (an initializer is not a node's output).
/// </summary>
public static class ImportNormalizer
{
    private static readonly HashSet<string> LinearLike = new(StringComparer.Ordinal) { "MatMul", "Gemm", "Conv", "ConvTranspose" };

    /// <summary>Normalizes <paramref name="model"/> in place (every graph, subgraphs included) and says what it did.</summary>
    public static ImportSummary Run(Model model)
    {
        int constants = 0, identities = 0;
        foreach (var g in model.Graph.AllGraphs().ToList())
        {
            constants += ConstantsToInitializers(g);
            identities += FoldIdentities(g);
        }
        if (constants > 0 && model.IrVersion < 4) model.IrVersion = 4; // initializers that are not graph inputs need IR 4
        int folded = FoldBatchNorms(model.Graph);
        var (shared, readers) = SharedWeights(model.Graph);
        return new ImportSummary(constants, identities, shared, readers, folded);
    }

    private static int FoldBatchNorms(Graph g)
    {
        int n = 0;
        foreach (var bn in g.Nodes.Where(x => x.Is("BatchNormalization")).ToList())
        {
            if (bn.Inputs.Count != 5 || bn.Inputs[0] is not { } y || y.Producer is not { } conv || !conv.Is("Conv") || !y.IsSingleUse)
                continue;
            if (bn.Outputs.Skip(1).Any(o => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput)) || bn.GetInt("training_mode", 0) != 0)
                continue;
            if (bn.GetInt("spatial", 1) != 1 || conv.Inputs[1] is not { IsInitializer: true } wv) continue;
            var w = wv.Initializer!;
            if (w.DataType != (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float || w.Dims.Length < 3) continue;
            long outC = w.Dims[0];
            var p = bn.Inputs.Skip(1).Select(v => Constants.Of(v)).ToList();
            if (p.Any(t => t is null || t.ElementCount != outC || !Constants.IsFloatingPoint(t.DataType))) continue;
            Tensor? biasT = conv.Inputs.Count > 2 && conv.Inputs[2] is { } bv ? Constants.Of(bv) : null;
            if (conv.Inputs.Count > 2 && conv.Inputs[2] is not null && biasT is null) continue;
            var (gamma, beta, mean, variance) = (p[0]!.ToFloat32(), p[1]!.ToFloat32(), p[2]!.ToFloat32(), p[3]!.ToFloat32());
            double eps = bn.GetFloat("epsilon", 1e-5f);
            var wf = w.ToFloat32();
            var bias = biasT?.ToFloat32() ?? new float[outC];
            long per = wf.Length / outC;
            var nb = new float[outC];
            for (long o = 0; o < outC; o++)
            {
                double f = gamma[o] / Math.Sqrt(variance[o] + eps);
                for (long j = 0; j < per; j++) wf[o * per + j] = (float)(wf[o * per + j] * f);
                nb[o] = (float)((bias[o] - mean[o]) * f + beta[o]);
            }
            // The replaced parameters, removed below when nothing else reads them.
            var old = new[] { wv, conv.Inputs.Count > 2 ? conv.Inputs[2] : null }.Concat(bn.Inputs.Skip(1)).ToList();
            var nw = g.AddInitializer(Tensor.FromFloats(g.UniqueName(wv.Name + "_bn"), w.Dims, wf));
            string biasName = g.UniqueName((conv.Name.Length > 0 ? conv.Name : wv.Name) + ".bias_bn");
            var nbv = g.AddInitializer(Tensor.FromFloats(biasName, [outC], nb));
            conv.SetInput(1, nw);
            if (conv.Inputs.Count > 2) conv.SetInput(2, nbv);
            else conv.AddInput(nbv);
            g.ReplaceValue(bn.Output, y);
            g.RemoveNode(bn, force: true);
            foreach (var v in old)
                if (v is { IsInitializer: true, Uses.Count: 0 } && !v.IsGraphOutput && !v.IsGraphInput) g.RemoveInitializer(v);
            n++;
        }
        return n;
    }

    private static int ConstantsToInitializers(Graph g)
    {
        int n = 0;
        foreach (var node in g.Nodes.Where(x => x.Is("Constant")).ToList())
        {
            if (node.Outputs.Count != 1 || node.Outputs[0] is not { } output || output.IsGraphOutput) continue;
            // Sparse and string constants stay nodes.
            if (Constants.Of(output) is not { } tensor || !Constants.IsNumeric(tensor)) continue;
            var init = g.AddInitializer(CopyOf(tensor, g.UniqueName(output.Name + "_const")));
            g.ReplaceValue(output, init);
            g.RemoveNode(node);
            n++;
        }
        return n;
    }

    private static Tensor CopyOf(Tensor t, string name) => Tensor.FromData(name, t.DataType, t.Dims, t.Data);

    private static int FoldIdentities(Graph g)
    {
        int n = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (var node in g.Nodes.Where(x => x.Is("Identity")).ToList())
            {
                if (node.Inputs.Count != 1 || node.Inputs[0] is not { IsInitializer: true } src || node.Outputs[0] is not { } output)
                    continue;
                if (output.IsGraphOutput || !ReferenceEquals(src.Graph, g)) continue;
                g.ReplaceAllUses(output, src);
                g.RemoveNode(node);
                n++;
                changed = true;
            }
        }
        return n;
    }

    /// <summary>The weight initializers read (as input 1) by several linear-like nodes of the main graph, and how many readers they
    /// have in all.</summary>
    private static (int Shared, int Readers) SharedWeights(Graph g)
    {
        int shared = 0, readers = 0;
        foreach (var w in g.Initializers)
        {
            int r = w.Uses.Count(u => u.InputIndex == 1 && LinearLike.Contains(u.Node.OpType) && u.Node.IsOnnxDomain
                && ReferenceEquals(u.Node.Graph, g));
            if (r < 2) continue;
            shared++;
            readers += r;
        }
        return (shared, readers);
    }
}
