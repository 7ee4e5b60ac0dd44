using Quantc.Core.Inspection;
using Quantc.Ir;

namespace Quantc.Cli;

/// <summary>Bridges layer analysis to the inspect report.</summary>
internal static class Layers
{
    public static IReadOnlyList<LinearLayerEntry> Recognise(Model model) => [];
}
