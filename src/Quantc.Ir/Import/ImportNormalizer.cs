using System.Globalization;
using Quantc.Ir.Patterns;

namespace Quantc.Ir.Import;

/// <summary>What <see cref="ImportNormalizer.Run"/> did to a model.</summary>
/// <param name="ConstantsToInitializers">Constant nodes whose tensor became an initializer.</param>
/// <param name="IdentitiesFolded">Identity nodes on constants removed (their readers read the constant).</param>
/// <param name="SharedWeights">Weights read by more than one linear-like node (MatMul, Gemm, Conv, ConvTranspose).</param>
/// <param name="CopiesMade">Copies of shared weights made so that each layer owns its weight.</param>
/// <param name="CopiedBytes">Bytes those copies add.</param>
public sealed record ImportSummary(int ConstantsToInitializers, int IdentitiesFolded, int SharedWeights, int CopiesMade, long CopiedBytes)
{
    /// <summary>True when the model was already in normal form.</summary>
    public bool NothingDone => ConstantsToInitializers == 0 && IdentitiesFolded == 0 && CopiesMade == 0;

    /// <summary>One line for the compile log.</summary>
    public string Describe() => NothingDone
        ? "import: already normal (no Constant-node tensors, no Identity on constants, no weight shared between layers)"
        : string.Create(CultureInfo.InvariantCulture,
            $"import: {ConstantsToInitializers} Constant node(s) → initializers, {IdentitiesFolded} Identity node(s) on constants " +
            $"folded, {SharedWeights} weight(s) shared between layers untied ({CopiesMade} cop{(CopiesMade == 1 ? "y" : "ies")}, " +
            $"{CopiedBytes / 1024.0:0.0} KiB) so that each layer is quantized once");
}

/// <summary>
/// The function-preserving first step of every compile, for graphs as exporters write them (Paddle2ONNX, older torch
/// exporters): Constant nodes that hold a tensor become initializers (so that the model map sees their weights);
/// Identity nodes whose input is a constant are folded (their readers read the constant itself); and a weight read by
/// several linear-like nodes (an exporter's deduplicated constant) is copied so that each layer owns one — a pass that
/// rescales, rounds or replaces one layer's weight then never changes another's.
/// Values that are graph outputs are left as they are (an initializer is not a node's output).
/// </summary>
public static class ImportNormalizer
{
    private static readonly HashSet<string> LinearLike = new(StringComparer.Ordinal) { "MatMul", "Gemm", "Conv", "ConvTranspose" };

    /// <summary>Normalizes <paramref name="model"/> in place (every graph, subgraphs included) and says what it did.</summary>
    public static ImportSummary Run(Model model)
    {
        int constants = 0, identities = 0, shared = 0, copies = 0;
        long bytes = 0;
        foreach (var g in model.Graph.AllGraphs().ToList())
        {
            constants += ConstantsToInitializers(g);
            identities += FoldIdentities(g);
        }
        if (constants > 0 && model.IrVersion < 4) model.IrVersion = 4; // initializers that are not graph inputs need IR 4
        var (s, c, b) = Untie(model.Graph);
        shared += s;
        copies += c;
        bytes += b;
        return new ImportSummary(constants, identities, shared, copies, bytes);
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
                if (node.Inputs.Count != 1 || node.Inputs[0] is not { IsInitializer: true } src || node.Outputs[0] is not { } output) continue;
                if (output.IsGraphOutput || !ReferenceEquals(src.Graph, g)) continue;
                g.ReplaceAllUses(output, src);
                g.RemoveNode(node);
                n++;
                changed = true;
            }
        }
        return n;
    }

    /// <summary>Copies each weight initializer read (as input 1) by several linear-like nodes of the main graph: one copy per extra
    /// reader.</summary>
    private static (int Shared, int Copies, long Bytes) Untie(Graph g)
    {
        int shared = 0, copies = 0;
        long bytes = 0;
        foreach (var w in g.Initializers.ToList())
        {
            var readers = w.Uses.Where(u => u.InputIndex == 1 && LinearLike.Contains(u.Node.OpType) && u.Node.IsOnnxDomain
                && ReferenceEquals(u.Node.Graph, g)).ToList();
            if (readers.Count < 2 || w.Initializer!.ElementCount < 2) continue;
            shared++;
            foreach (var u in readers.Skip(1))
            {
                var copy = g.AddInitializer(CopyOf(w.Initializer, g.UniqueName(w.Name + "_" + (u.Node.Name.Length > 0 ? u.Node.Name : "copy"))));
                u.Node.SetInput(u.InputIndex, copy);
                copies++;
                bytes += w.Initializer.ByteLength;
            }
        }
        return (shared, copies, bytes);
    }
}
