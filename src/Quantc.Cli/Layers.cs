using Quantc.Core.Inspection;
using Quantc.Ir;
using Quantc.Ir.Analysis;

namespace Quantc.Cli;

/// <summary>Bridges layer analysis to the inspect report.</summary>
internal static class Layers
{
    public static IReadOnlyList<LinearLayerEntry> Recognise(Model model) =>
        LayerAnalysis.Analyze(model.Graph).Linears
            .Select(l => new LinearLayerEntry(l.Name, l.Node.OpType + (l.BiasAdd is null ? "" : "+Add"), l.InFeatures, l.OutFeatures,
                l.Bias is not null, l.FedBy?.Name))
            .ToList();
}
