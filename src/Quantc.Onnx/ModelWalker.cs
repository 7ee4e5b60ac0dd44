using Quantc.Onnx.Proto;

namespace Quantc.Onnx;

/// <summary>Visits every tensor stored in a model: initializers, sparse initializers, attribute tensors, in every (sub)graph, function and
/// training graph.</summary>
public static class ModelWalker
{
    /// <summary>Every TensorProto in the model with a short description of where it is.</summary>
    public static IEnumerable<(TensorProto Tensor, string Where)> Tensors(ModelProto model)
    {
        if (model.Graph is not null)
            foreach (var x in Tensors(model.Graph, "graph")) yield return x;
        foreach (var f in model.Functions)
            foreach (var n in f.Node)
                foreach (var x in Tensors(n, $"function {f.Name}")) yield return x;
        for (int i = 0; i < model.TrainingInfo.Count; i++)
        {
            var ti = model.TrainingInfo[i];
            if (ti.Initialization is not null)
                foreach (var x in Tensors(ti.Initialization, $"training_info[{i}].initialization")) yield return x;
            if (ti.Algorithm is not null)
                foreach (var x in Tensors(ti.Algorithm, $"training_info[{i}].algorithm")) yield return x;
        }
    }

    /// <summary>Every TensorProto of a graph and its subgraphs.</summary>
    public static IEnumerable<(TensorProto Tensor, string Where)> Tensors(GraphProto g, string where)
    {
        foreach (var t in g.Initializer) yield return (t, $"{where} initializer");
        foreach (var s in g.SparseInitializer)
        {
            if (s.Values is not null) yield return (s.Values, $"{where} sparse initializer values");
            if (s.Indices is not null) yield return (s.Indices, $"{where} sparse initializer indices");
        }
        foreach (var n in g.Node)
            foreach (var x in Tensors(n, where)) yield return x;
    }

    private static IEnumerable<(TensorProto Tensor, string Where)> Tensors(NodeProto n, string where)
    {
        string at = $"{where}, attribute of node '{(n.Name.Length > 0 ? n.Name : n.OpType)}'";
        foreach (var a in n.Attribute)
        {
            if (a.T is not null) yield return (a.T, at);
            foreach (var t in a.Tensors) yield return (t, at);
            if (a.SparseTensor is not null)
            {
                if (a.SparseTensor.Values is not null) yield return (a.SparseTensor.Values, at);
                if (a.SparseTensor.Indices is not null) yield return (a.SparseTensor.Indices, at);
            }
            foreach (var s in a.SparseTensors)
            {
                if (s.Values is not null) yield return (s.Values, at);
                if (s.Indices is not null) yield return (s.Indices, at);
            }
            if (a.G is not null)
                foreach (var x in Tensors(a.G, $"{where}/{a.Name}")) yield return x;
            foreach (var g in a.Graphs)
                foreach (var x in Tensors(g, $"{where}/{a.Name}")) yield return x;
        }
    }
}
