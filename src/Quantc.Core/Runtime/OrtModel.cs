using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Runtime;

/// <summary>
/// Opens an IR model in ONNX Runtime without writing it out: the proto is serialised in memory,
/// tensors made by passes are inlined, and tensors still in the original external data files are
/// read by ONNX Runtime from the model's folder. Past <see cref="InlineLimitBytes"/> of inline tensors
/// (a rewritten large model), the session is opened from a temporary copy with external data instead.
/// </summary>
public static class OrtModel
{
    /// <summary>
    /// Above this many bytes of tensors held in the protobuf (new tensors made by passes, small ones of the
    /// original), a session is opened from a temporary copy written with external data instead of from one byte
    /// array: a protobuf cannot pass 2 GiB, and an inlined tensor is held three times while the session opens (the
    /// protobuf's copy, the serialised bytes, ONNX Runtime's own) — on a 1b model's decoder block of rewritten weights
    /// (176 MB) that was +500 MiB at every segment of a calibration run. Settable for tests.
    /// </summary>
    public static long InlineLimitBytes { get; set; } = 128L << 20;

    /// <summary>Creates an inference session for <paramref name="model"/>, optionally adding graph outputs.</summary>
    public static InferenceSession CreateSession(Model model, IEnumerable<string>? extraOutputs = null, SessionOptions? options = null)
    {
        var (proto, payload) = model.ToProto();
        if (extraOutputs is not null)
        {
            var existing = proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var name in extraOutputs)
                if (existing.Add(name)) proto.Graph.Output.Add(new ValueInfoProto { Name = name });
        }
        return Open(proto, payload, model.File?.Directory, CustomOps.IsUsedBy(model), options);
    }

    /// <summary>
    /// Opens <paramref name="proto"/> (tensors without data come from <paramref name="payload"/> and are written into the proto's
    /// own tensor objects; tensors in external files are read from <paramref name="externalFolder"/>).
    /// </summary>
    internal static InferenceSession Open(ModelProto proto, Func<TensorProto, TensorData?> payload, string? externalFolder, bool customOps,
        SessionOptions? options = null)
    {
        var so = options ?? DefaultOptions();
        if (customOps) CustomOps.Register(so);
        string? folder = null;
        try
        {
            if (InlineBytes(proto, payload) > InlineLimitBytes)
            {
                // Large: written (tensors of 1 MiB and more as external data) and opened from the file. The folder is named
                // with the process id, so a process can tell its own from other compiles' on the machine.
                folder = Directory.CreateTempSubdirectory($"quantc-session-{Environment.ProcessId}-").FullName;
                var saved = OnnxModelWriter.Save(proto, Path.Combine(folder, "model.onnx"), payload);
                return new InferenceSession(saved.ModelPath, so);
            }
            InlineNewTensors(proto, payload);
            if (externalFolder is not null)
                so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", externalFolder);
            return new InferenceSession(proto.ToByteArray(), so);
        }
        catch (OnnxRuntimeException e)
        {
            throw new BadInputException($"ONNX Runtime cannot load the model: {e.Message.ReplaceLineEndings(" ")}", e);
        }
        finally
        {
            if (options is null) so.Dispose();
            // The session holds what it read (a mapped file stays readable once unlinked).
            if (folder is not null)
                try { Directory.Delete(folder, recursive: true); }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Bytes of the tensors the protobuf would hold once new tensors are inlined.</summary>
    private static long InlineBytes(ModelProto proto, Func<TensorProto, TensorData?> payload)
    {
        long total = 0;
        foreach (var (t, _) in ModelWalker.Tensors(proto))
        {
            bool external = t.DataLocation == TensorProto.Types.DataLocation.External;
            if (external && t.ExternalData.Count > 0) continue;   // read by ONNX Runtime from the original file
            total += TensorBytes.PayloadBytes(t, external ? payload(t) : null);
        }
        return total;
    }

    /// <summary>
    /// Runs <paramref name="session"/> on named inputs. ONNX Runtime's refusal of the data — an index out of a table's
    /// range, a shape the model cannot take — is a <see cref="BadInputException"/> naming <paramref name="which"/> model.
    /// </summary>
    public static IDisposableReadOnlyCollection<OrtValue> Run(InferenceSession session, IReadOnlyList<(string Name, OrtValue Value)> inputs,
        IReadOnlyCollection<string> outputs, string which)
    {
        using var ro = new RunOptions();
        try
        {
            return session.Run(ro, inputs.Select(x => x.Name).ToArray(), inputs.Select(x => x.Value).ToArray(), outputs);
        }
        catch (OnnxRuntimeException e)
        {
            throw new BadInputException($"ONNX Runtime cannot run the {which} on this data: {e.Message.ReplaceLineEndings(" ")}", e);
        }
    }

    /// <summary>
    /// Opens a written model file in ONNX Runtime (from its path, so external data and models past
    /// 2 GB load as they will for a user) and closes it again; returns ONNX Runtime's error, or null
    /// when the model loads. Weights are not prepacked for the kernels (nothing runs).
    /// </summary>
    public static string? LoadError(string path, bool customOps)
    {
        using var so = DefaultOptions();
        if (customOps) CustomOps.Register(so);
        // Graph optimizations run as they will for a user, but kernels do not repack their weights: the repacked copies
        // (MatMulNBits, MatMulInteger...) would double the resident weights for a check that runs nothing (issue 22 item 10).
        so.AddSessionConfigEntry("session.disable_prepacking", "1");
        try
        {
            using var session = new InferenceSession(path, so);
            return null;
        }
        catch (OnnxRuntimeException e)
        {
            return e.Message.ReplaceLineEndings(" ");
        }
    }

    /// <summary>
    /// Session options used by default: all graph optimisations, deterministic thread count, and ONNX Runtime's own
    /// logging off (below fatal): its errors reach quantc as exceptions and are reported once, on one line.
    /// </summary>
    public static SessionOptions DefaultOptions()
    {
        var so = CpuOptions();
        if (Provider == ExecutionTarget.Cuda) Cuda.AppendTo(so);
        return so;
    }

    /// <summary>Where sessions made with <see cref="DefaultOptions"/> run: the CPU (default) or ONNX Runtime's CUDA provider first
    /// (<c>quantc verify --ep cuda</c>); ONNX Runtime places on the CPU what the CUDA provider cannot run.</summary>
    public static ExecutionTarget Provider { get; set; } = ExecutionTarget.Cpu;

    /// <summary>The default options without any execution provider but the CPU's.</summary>
    internal static SessionOptions CpuOptions() => new()
    {
        GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
    };

    private static void InlineNewTensors(ModelProto proto, Func<TensorProto, TensorData?> payload)
    {
        foreach (var (t, _) in ModelWalker.Tensors(proto))
        {
            if (t.DataLocation != TensorProto.Types.DataLocation.External || t.ExternalData.Count > 0) continue;
            var data = payload(t) ?? throw new InvalidOperationException($"tensor '{t.Name}' has no data");
            TensorBytes.SetRaw(t, data.Span);
        }
    }
}

/// <summary>Where quantc's own sessions run.</summary>
public enum ExecutionTarget
{
    /// <summary>ONNX Runtime's CPU provider.</summary>
    Cpu,

    /// <summary>ONNX Runtime's CUDA provider first (the GPU package), the CPU for what it cannot run.</summary>
    Cuda,
}
