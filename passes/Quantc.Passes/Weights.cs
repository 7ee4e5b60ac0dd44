using Quantc.Core.Numerics;
using Quantc.Ir;
using Quantc.Ir.Building;
using Quantc.Ir.Analysis;

namespace Quantc.Passes;

/// <summary>Reads and writes a linear layer's weight as a [K, N] float matrix (row j = input channel j) whatever its orientation.</summary>
internal static class Weights
{
    /// <summary>The weight as float32 [N, K] (row c = output channel c), the layout of the weight quantizers.</summary>
    public static float[] ReadNk(LinearLayer l)
    {
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        // A weight stored [N, K] (Gemm transB, MatMul of Transpose(W)) is already in this layout.
        var t = l.Weight.Initializer!;
        if (l.Conv is null && l.WeightIsOutByIn) return t.ToFloat32();
        if (l.Conv is null && t.DataType == (int)Quantc.Onnx.Proto.TensorProto.Types.DataType.Float)
        {
            // Transposed straight from the raw little-endian bytes (the map of an external tensor): one copy, not two.
            var direct = new float[(long)k * n];
            Transposition.Floats(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.Data.Span), direct, k, n);
            t.DropPages();
            return direct;
        }
        var kn = Read(l);
        var nk = new float[kn.Length];
        Transposition.Floats(kn, nk, k, n);
        return nk;
    }

    /// <summary>The weight as float32 [K, N].</summary>
    public static float[] Read(LinearLayer l)
    {
        var w = l.Weight.Initializer!.ToFloat32();
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        if (l.Conv is { Transposed: true })
        {
            var kn = new float[w.Length];
            for (int o = 0; o < n; o++) for (int j = 0; j < k; j++) kn[j * n + o] = w[ConvTransposeIndex(l, o, j)];
            return kn;
        }
        if (!l.WeightIsOutByIn) return w;
        var t = new float[w.Length];
        Transposition.Floats(w, t, n, k);
        return t;
    }

    /// <summary>
    /// Where a ConvTranspose's weight [in, out/group, k…] stores element (output channel <paramref name="o"/>, row <paramref name="j"/>)
    /// of its [K, N] view, row j = (input channel within o's group, kernel position); output channel o = group gi · out/group + oc
    /// reads input channels gi · in/group + j / k.
    /// </summary>
    public static int ConvTransposeIndex(LinearLayer l, int o, int j)
    {
        var c = l.Conv!;
        int kk = (int)c.KernelSize, perGroupOut = (int)c.WeightDims[1], perGroupIn = (int)(c.WeightDims[0] / c.Group);
        int gi = o / perGroupOut, input = gi * perGroupIn + j / kk;
        return (input * perGroupOut + o % perGroupOut) * kk + j % kk;
    }

    /// <summary>Replaces the weight with <paramref name="kn"/> ([K, N] float32), keeping its orientation; a weight shared with another node
    /// is copied first.</summary>
    public static void Write(Graph g, LinearLayer l, float[] kn)
    {
        int k = (int)l.InFeatures, n = (int)l.OutFeatures;
        float[] data = kn;
        if (l.Conv is { Transposed: true })
        {
            data = new float[kn.Length];
            for (int o = 0; o < n; o++) for (int j = 0; j < k; j++) data[ConvTransposeIndex(l, o, j)] = kn[j * n + o];
        }
        else if (l.WeightIsOutByIn)
        {
            data = new float[kn.Length];
            for (int o = 0; o < n; o++) for (int j = 0; j < k; j++) data[o * k + j] = kn[j * n + o];
        }
        var dims = l.Weight.Initializer!.Dims;
        if (l.Weight.Uses.Count > 1)
        {
            // Tied weights (the passes that fold into weights skip those; this is the safe fallback): this layer gets its
            // own copy, the other readers keep the original.
            var own = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Name + ".weight"), dims, data));
            l.WeightUse.Node.SetInput(l.WeightUse.InputIndex, own);
            return;
        }
        g.SetInitializer(l.Weight, Tensor.FromFloats(l.Weight.Name, dims, data));
    }

    /// <summary>Sets (or creates) the layer's bias to <paramref name="bias"/>; returns the updated layer record.</summary>
    public static void WriteBias(Graph g, LinearLayer l, float[] bias, PassContextBias ctx)
    {
        if (l.Bias is { } b)
        {
            g.SetInitializer(b, Tensor.FromFloats(b.Name, b.Initializer!.Dims, bias));
            return;
        }
        // No bias yet: add one after the MatMul. The sum takes over the output's name, so graph
        // outputs and provenance keep referring to the layer's (biased) result.
        var bv = g.AddInitializer(Tensor.FromFloats(g.UniqueName(l.Name + ".bias"), [bias.Length], bias));
        var oldOut = l.Node.Output;
        string name = oldOut.Name;
        var users = oldOut.Uses.ToList();
        var outputSlots = Enumerable.Range(0, g.Outputs.Count).Where(i => ReferenceEquals(g.Outputs[i], oldOut)).ToList();
        g.RenameValueUnique(oldOut, name + "_nobias");
        var firstUser = GraphOrder.FirstUser(g, oldOut);
        var add = new Emitter(g, firstUser, l.Name).NodeOf("Add", "/bias_add", [oldOut, bv], outputNames: [name]);
        foreach (var u in users) u.Node.SetInput(u.InputIndex, add.Output);
        foreach (int i in outputSlots) g.SetOutput(i, add.Output);
        ctx.Record(oldOut.Name, name);
    }
}

/// <summary>Graph-order queries the lowering passes share.</summary>
internal static class GraphOrder
{
    /// <summary>The first node of <paramref name="g"/>, in graph order, that reads <paramref name="v"/> (null when none in this graph
    /// does).</summary>
    public static Node? FirstUser(Graph g, Value v)
    {
        var users = v.Uses.Select(u => u.Node).Where(n => ReferenceEquals(n.Graph, g)).ToHashSet(ReferenceEqualityComparer.Instance);
        return users.Count == 0 ? null : g.Nodes.FirstOrDefault(n => users.Contains(n));
    }
}

/// <summary>The one thing bias writing needs from the pass context: recording provenance.</summary>
internal sealed class PassContextBias(Quantc.Core.Pipeline.PassContext ctx)
{
    public void Record(string compiled, string original) => ctx.Provenance.Record(compiled, original);
}
