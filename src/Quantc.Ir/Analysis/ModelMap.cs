using Quantc.Ir.Patterns;

namespace Quantc.Ir.Analysis;

/// <summary>Kind of normalisation.</summary>
public enum NormKind
{
    /// <summary>x / sqrt(mean(x²) + ε) · γ.</summary>
    RmsNorm,
    /// <summary>(x − mean(x)) / sqrt(var(x) + ε) · γ + β.</summary>
    LayerNorm,
}

/// <summary>
/// A recognised normalisation over the last axis: where it reads and writes, its γ (and β), its ε,
/// and the nodes that compute it. γ and β are initializers (passes rewrite them in place).
/// </summary>
public sealed class NormInfo
{
    /// <summary>Stable name, e.g. <c>model.layers.0.input_layernorm</c>.</summary>
    public required string Name { get; init; }

    /// <summary>RMSNorm or LayerNorm.</summary>
    public required NormKind Kind { get; init; }

    /// <summary>How it is written: "decomposed", or the fused op type (SimplifiedLayerNormalization, LayerNormalization...).</summary>
    public required string Form { get; init; }

    /// <summary>The normalised input (before any Cast to float32 the decomposed form does first).</summary>
    public required Value Input { get; init; }

    /// <summary>The residual added to <see cref="Input"/> before normalising (Skip*LayerNormalization), else null.</summary>
    public Value? Skip { get; init; }

    /// <summary>The normalised, scaled (and shifted) output.</summary>
    public required Value Output { get; init; }

    /// <summary>γ: a 1-D initializer of <see cref="HiddenSize"/> values.</summary>
    public required Value Gamma { get; init; }

    /// <summary>β: a 1-D initializer (LayerNorm), else null.</summary>
    public Value? Beta { get; init; }

    /// <summary>ε added to the mean square (variance).</summary>
    public required float Epsilon { get; init; }

    /// <summary>The nodes that compute the norm, the output node first.</summary>
    public required IReadOnlyList<Node> Nodes { get; init; }

    /// <summary>The node whose output is the normalised value (the γ multiplication, the β addition, or the fused op).</summary>
    public Node OutputNode => Output.Producer!;

    /// <summary>Number of channels normalised (γ's length).</summary>
    public long HiddenSize => Gamma.Initializer!.ElementCount;

    /// <summary>The linear layers this norm feeds (directly or through a Cast), in graph order.</summary>
    public IReadOnlyList<LinearLayer> Feeds { get; internal set; } = [];

    /// <inheritdoc/>
    public override string ToString() => $"{Kind} {Name} ({Form}, ε={Epsilon}, {HiddenSize} channels)";
}

/// <summary>
/// A recognised linear layer y = x·W (+ b): <c>MatMul(x, W)</c> with W a 2-D initializer [in, out]
/// (as torch exports it, pre-transposed) and an optional <c>Add</c> of a constant bias, or
/// <c>Gemm(x, W, C)</c> with W [out, in] when transB = 1.
/// </summary>
public sealed class LinearLayer
{
    /// <summary>Stable name, e.g. <c>model.layers.0.self_attn.q_proj</c> (unique within a <see cref="ModelMap"/>).</summary>
    public required string Name { get; init; }

    /// <summary>The MatMul or Gemm.</summary>
    public required Node Node { get; init; }

    /// <summary>The Add of the bias after a MatMul, else null.</summary>
    public Node? BiasAdd { get; init; }

    /// <summary>The activation x.</summary>
    public required Value Input { get; init; }

    /// <summary>The layer's result (the bias Add's output when there is one).</summary>
    public required Value Output { get; init; }

    /// <summary>W, an initializer.</summary>
    public required Value Weight { get; init; }

    /// <summary>The bias (the Add's constant or Gemm's C), else null.</summary>
    public Value? Bias { get; init; }

    /// <summary>Input features (K).</summary>
    public required long InFeatures { get; init; }

    /// <summary>Output features (N).</summary>
    public required long OutFeatures { get; init; }

    /// <summary>True when W is stored [out, in] (Gemm with transB = 1, or a MatMul reading Transpose(W)), false for [in, out].</summary>
    public required bool WeightIsOutByIn { get; init; }

    /// <summary>
    /// Where W is read: input 1 of the MatMul or Gemm, or input 0 of the Transpose between W and the MatMul (a head
    /// tied to the input embedding, as torch exports it). A pass that replaces the weight replaces it here.
    /// </summary>
    public Use WeightUse { get => _weightUse ?? new Use(Node, 1); init => _weightUse = value; }

    private readonly Use? _weightUse;

    /// <summary>The Transpose between W and the MatMul, for a layer that reads its weight transposed; else null.</summary>
    public Node? WeightTranspose => _weightUse is { } u && !ReferenceEquals(u.Node, Node) ? u.Node : null;

    /// <summary>For a Conv layer: its weight's shape and group count (W is read as the [out, in/group·kernel] matrix its storage is);
    /// null for MatMul and Gemm.</summary>
    public ConvInfo? Conv { get; init; }

    /// <summary>The norm whose output this layer reads (directly or through a Cast), else null.</summary>
    public NormInfo? FedBy { get; internal set; }

    /// <summary>The Cast between <see cref="FedBy"/> and this layer, when there is one.</summary>
    public Node? FedVia { get; internal set; }

    /// <summary>W's tensor.</summary>
    public Tensor WeightTensor => Weight.Initializer!;

    /// <summary>The layer's nodes: the MatMul/Gemm, then the bias Add.</summary>
    public IReadOnlyList<Node> Nodes =>
        [.. WeightTranspose is { } t ? [t] : Array.Empty<Node>(), Node, .. BiasAdd is null ? Array.Empty<Node>() : [BiasAdd]];

    /// <summary>How it is written: "MatMul", "MatMul+Add" or "Gemm".</summary>
    public string Form => (WeightTranspose is null ? "" : "Transpose+") + Node.OpType + (BiasAdd is null ? "" : "+Add");

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Form}, {InFeatures}→{OutFeatures}{(FedBy is null ? "" : $", fed by {FedBy.Name}")})";
}

/// <summary>A Conv layer's weight shape [out, in/group, k…] and group count (depthwise: group = in = out); for a ConvTranspose
/// (<paramref name="Transposed"/>) the weight is [in, out/group, k…]: its output channels are axis 1, within each group of in/group input
/// channels.</summary>
public sealed record ConvInfo(long[] WeightDims, long Group, bool Transposed = false)
{
    /// <summary>The weight axis of the output channels (0 for Conv, 1 for ConvTranspose).</summary>
    public int OutAxis => Transposed ? 1 : 0;

    /// <summary>Kernel positions per (input, output) channel pair: the product of the weight's dims after the first two.</summary>
    public long KernelSize => WeightDims.Skip(2).Aggregate(1L, (a, d) => a * d);
}

/// <summary>Linear layers that read the same input, such as q/k/v or gate/up.</summary>
/// <param name="Input">The shared input.</param>
/// <param name="Layers">The layers, in graph order.</param>
/// <param name="FedBy">The norm that produces the input, if any.</param>
public sealed record LinearGroup(Value Input, IReadOnlyList<LinearLayer> Layers, NormInfo? FedBy);

/// <summary>
/// The model map: the structure analysis found in a graph — linear layers and how they group, norms
/// and their readers, Mamba mixers, attention sites with their caches — and why it passed over what it
/// did not take. The single owner of structure: passes select from it instead of walking producers.
/// Built by <see cref="LayerAnalysis.Analyze"/>; describes the model at <see cref="Revision"/> (a
/// pass context rebuilds it when the model has been edited since).
/// </summary>
public sealed class ModelMap
{
    private Dictionary<string, LinearLayer>? _byName;

    /// <summary>The graph the map describes.</summary>
    public required Graph Graph { get; init; }

    /// <summary>The model revision (<see cref="Model.Revision"/>) the map describes; -1 for a graph outside a model.</summary>
    public long Revision { get; init; } = -1;

    /// <summary>Attention sites (eager, GroupQueryAttention, MultiHeadAttention), in graph order, with their key and value
    /// caches.</summary>
    public List<AttentionSite> Attention { get; } = [];

    /// <summary>Every Softmax read by a MatMul with its parts, in graph order — also those that are not a site (with the reason).</summary>
    public List<DecomposedAttention> DecomposedAttention { get; } = [];

    /// <summary>Linear layers, in graph order.</summary>
    public List<LinearLayer> Linears { get; } = [];

    /// <summary>Decomposed rotary embeddings (rotate-half, tables gathered by position), in graph order.</summary>
    public List<RopeSite> Ropes { get; } = [];

    /// <summary>Norms, in graph order.</summary>
    public List<NormInfo> Norms { get; } = [];

    /// <summary>Mamba mixers (in_proj … selective scan … out_proj), in graph order.</summary>
    public List<MambaBlock> Mambas { get; } = [];

    /// <summary>Near misses with the reason, e.g. <c>MatMul 'mm': second input 'w' is a graph input, not an initializer</c>.</summary>
    public List<Refusal> Refusals { get; } = [];

    /// <summary>Linear layers grouped by shared input (groups of one included), in graph order.</summary>
    public List<LinearGroup> Groups { get; } = [];

    /// <summary>The linear layers that read <paramref name="v"/> directly (e.g. q, k and v read the same normed input).</summary>
    public IReadOnlyList<LinearLayer> Readers(Value v) => Linears.Where(l => ReferenceEquals(l.Input, v)).ToList();

    /// <summary>The linear layer named <paramref name="name"/>, or null.</summary>
    public LinearLayer? this[string name]
    {
        get
        {
            if (_byName is null || _byName.Count != Linears.Count) _byName = Linears.ToDictionary(l => l.Name, StringComparer.Ordinal);
            return _byName.GetValueOrDefault(name);
        }
    }

    /// <summary>The head region of a value projection (where its output stays in whole heads, and the layers reading it at
    /// the end), or null with the reason.</summary>
    public HeadRegion? HeadRegionOf(LinearLayer v, out string? why) => HeadRegion.Follow(v, this, out why);

    /// <summary>
    /// The residual stream of a pre-norm transformer (embedding, writers, norms, readers), or null with the reason;
    /// <paramref name="acceptNorm"/> may refuse a norm on it (a pass's own condition, such as a rotation's).
    /// </summary>
    public ResidualStream? ResidualStreamOf(Func<NormInfo, string?>? acceptNorm, out string? why) =>
        ResidualStream.Find(Graph, this, acceptNorm, out why);

    /// <summary>The chain of LLaMA-style decoder blocks (norms, q/k/v/o, RoPE, attention shape, SwiGLU MLP, residual values), or
    /// null with the reason.</summary>
    public IReadOnlyList<DecoderBlock>? DecoderBlocksOf(out string? why) => DecoderBlocks.Find(this, out why);

    /// <summary>The norm named <paramref name="name"/>, or null.</summary>
    public NormInfo? Norm(string name) => Norms.FirstOrDefault(n => n.Name == name);

    /// <summary>The group of layers that read the same input as <paramref name="layer"/>.</summary>
    public LinearGroup GroupOf(LinearLayer layer) => Groups.First(g => g.Layers.Contains(layer));

    /// <summary>A multi-line summary (layers, norms, refusals) for logs and tests.</summary>
    public string Describe()
    {
        var lines = new List<string>();
        lines.AddRange(Norms.Select(n => "norm   " + n));
        lines.AddRange(Linears.Select(l => "linear " + l));
        lines.AddRange(Mambas.Select(b => "mamba  " + b));
        lines.AddRange(Ropes.Select(r => "rope   " + r));
        lines.AddRange(Refusals.Select(r => "refused " + r));
        return string.Join('\n', lines);
    }
}
