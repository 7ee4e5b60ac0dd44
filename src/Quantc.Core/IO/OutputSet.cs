using System.Runtime.InteropServices;
using System.Text;
using Quantc.Onnx;

namespace Quantc.Core.IO;

/// <summary>What an output file is; decides how an existing file is recognised as an earlier quantc output.</summary>
public enum OutputKind
{
    /// <summary>An ONNX model (its external-data file, model name + ".data", comes with it).</summary>
    Model,
    /// <summary>A JSON report.</summary>
    Report,
    /// <summary>A self-contained HTML page.</summary>
    Html,
    /// <summary>A calibration statistics file.</summary>
    Stats,
    /// <summary>A file of a GenAI folder (genai_config.json, tokenizer, custom-op library): an earlier output when the folder's
    /// model.onnx is a quantc model.</summary>
    GenaiFile,
    /// <summary>An SVG chart (compile --charts): starts with <see cref="Reports.ReportChart.Marker"/>.</summary>
    Chart,
}

/// <summary>
/// The output policy, in one place. Every output of a command is declared before any work
/// starts and checked then: not an input (after resolving links), not a device, a folder or a
/// link, not declared twice, its folder writable, its name short enough, and an existing file is
/// replaced only when it is an earlier quantc output (or with <c>--force</c>). Each output is
/// written into a private staging folder beside its destination; <see cref="Commit"/> renames
/// all of them into place at the end, and disposing without a commit removes everything staged,
/// so a failure at any point leaves nothing new on disk and every input unchanged.
/// </summary>
public sealed class OutputSet : IDisposable
{
    /// <summary>Prefix of the staging folders (a killed run's are removed by the next one in that folder).</summary>
    public const string StagingPrefix = ".quantc-";

    private const int MaxNameBytes = 255;
    private readonly bool _force;
    private readonly Dictionary<string, string> _inputs = new(StringComparer.Ordinal); // resolved → as given
    private readonly List<Entry> _entries = [];
    private readonly Dictionary<string, string> _staging = new(StringComparer.Ordinal); // destination folder → staging folder
    private readonly List<string> _createdFolders = [];
    private bool _committed;

    private sealed record Entry(string Option, string Given, string Destination, string Staged, OutputKind Kind, bool Companion);

    public OutputSet(bool force = false) => _force = force;

    /// <summary>Declares an input file (a model, its external data, a data or recipe file); outputs may not resolve to it.</summary>
    public void AddInput(string? path)
    {
        if (string.IsNullOrEmpty(path) || !File.Exists(path)) return;
        _inputs.TryAdd(Resolve(path), path);
    }

    /// <summary>
    /// The default path of a file written beside <paramref name="model"/>: its extension replaced by <paramref name="extension"/>
    /// (<c>q.onnx</c> → <c>q.report.json</c>), the stem shortened where the name would pass the file system's 255 bytes, so that an
    /// output name that fits always has a report name that fits.
    /// </summary>
    public static string Sidecar(string model, string extension)
    {
        string dir = Path.GetDirectoryName(model) ?? "", stem = Path.GetFileNameWithoutExtension(model);
        while (stem.Length > 1 && System.Text.Encoding.UTF8.GetByteCount(stem + extension) > MaxNameBytes)
            stem = stem[..^(char.IsLowSurrogate(stem[^1]) ? 2 : 1)];
        return Path.Combine(dir, stem + extension);
    }

    /// <summary>Declares a model input and every external-data file it reads.</summary>
    public void AddModelInput(string path, Quantc.Ir.Model model)
    {
        AddInput(path);
        if (model.File is null) return;
        foreach (var f in model.File.ExternalFiles) AddInput(f.Path);
    }

    /// <summary>
    /// Declares an output given as <paramref name="option"/> (e.g. "--output") and checks it; returns
    /// the staging path to write it to. A <see cref="OutputKind.Model"/> also declares its data file.
    /// </summary>
    public string Add(string option, string path, OutputKind kind)
    {
        if (_committed) throw new InvalidOperationException("outputs already committed");
        string dest = Check(option, path, kind);
        if (_entries.FirstOrDefault(e => e.Destination == dest) is { } dup)
            throw new BadInputException($"{option} {path} is the same file as {dup.Option} {dup.Given}; give each output its own path");
        string staged = Path.Combine(StagingFolder(option, path, Path.GetDirectoryName(dest)!), Path.GetFileName(dest));
        _entries.Add(new Entry(option, path, dest, staged, kind, false));
        if (kind == OutputKind.Model)
        {
            string data = dest + ".data";
            string given = path + ".data";
            CheckCompanion(option, given, data, dest);
            if (_entries.FirstOrDefault(e => e.Destination == data) is { } dup2)
                throw new BadInputException($"{option} {path} writes its external data to {given}, which is {dup2.Option}; give each " +
                    $"output its own path");
            _entries.Add(new Entry(option, given, data, staged + ".data", kind, true));
        }
        return staged;
    }

    /// <summary>Moves every staged output into place (external data before its model, reports last) and removes the staging
    /// folders.</summary>
    public void Commit()
    {
        if (_committed) return;
        try
        {
            foreach (var e in _entries.Where(e => e.Companion))
            {
                string model = e.Destination[..^".data".Length];
                if (File.Exists(e.Staged))
                {
                    // Two files cannot be replaced in one step: remove the old model first, so that a crash
                    // between the renames leaves no model rather than an old model over new data.
                    if (File.Exists(model)) File.Delete(model);
                    File.Move(e.Staged, e.Destination, overwrite: true);
                }
                else if (File.Exists(e.Destination) && _entries.Any(x => x.Destination == model && File.Exists(x.Staged)))
                    File.Delete(e.Destination); // the earlier output's data file; the new model has none
            }
            foreach (var e in _entries.Where(e => !e.Companion).OrderBy(e => e.Kind == OutputKind.Model ? 0 : 1))
                if (File.Exists(e.Staged)) File.Move(e.Staged, e.Destination, overwrite: true);
            _committed = true;
        }
        catch (Exception x) when (x is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"cannot move the outputs into place: {x.Message}", x);
        }
        finally
        {
            RemoveStaging();
        }
    }

    /// <summary>Removes whatever was staged and not committed, and folders this set created that stayed empty.</summary>
    public void Dispose()
    {
        RemoveStaging();
        if (_committed) return;
        foreach (var d in Enumerable.Reverse(_createdFolders))
            try { if (Directory.Exists(d) && !Directory.EnumerateFileSystemEntries(d).Any()) Directory.Delete(d); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
    }

    private void RemoveStaging()
    {
        foreach (var s in _staging.Values)
            try { if (Directory.Exists(s)) Directory.Delete(s, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        _staging.Clear();
    }

    private string Check(string option, string path, OutputKind kind)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new BadInputException($"{option}: empty path");
        if (path.IndexOfAny(['\0']) >= 0) throw new BadInputException($"{option}: the path contains a NUL character");
        if (path.EndsWith('/') || path.EndsWith(Path.DirectorySeparatorChar) || Directory.Exists(path))
            throw new BadInputException($"{option} {path} is a folder; give a file path");
        string name = Path.GetFileName(path);
        if (name is "." or "..") throw new BadInputException($"{option} {path} is a folder; give a file path");
        int limit = kind == OutputKind.Model ? MaxNameBytes - ".data".Length : MaxNameBytes;
        if (Encoding.UTF8.GetByteCount(name) > limit)
            throw new BadInputException($"{option}: the file name is {Encoding.UTF8.GetByteCount(name)} bytes; at most {limit} are " +
                $"allowed here");
        var info = new FileInfo(path);
        if (info.LinkTarget is not null)
            throw new BadInputException($"{option} {path} is a symbolic link; quantc does not write through links (give the target's " +
                $"path)");
        string dest = Resolve(path);
        if (_inputs.TryGetValue(dest, out var input))
            throw new BadInputException($"{option} {path} is the input {input}; quantc never overwrites an input — choose another path");
        if (info.Exists)
        {
            if (!Posix.IsRegularFile(dest))
                throw new BadInputException($"{option} {path} is not a regular file (a device, pipe or socket); give a file path");
            if (!_force && !PreviousOutputs.Is(dest, kind))
                throw new BadInputException($"{option} {path} exists and is not an earlier quantc {Describe(kind)}; remove it, choose " +
                    $"another path, or pass --force");
        }
        return dest;
    }

    private void CheckCompanion(string option, string given, string data, string model)
    {
        if (Directory.Exists(data)) throw new BadInputException($"{option}: the external-data path {given} is a folder");
        if (new FileInfo(data).LinkTarget is not null)
            throw new BadInputException($"{option}: the external-data path {given} is a symbolic link");
        if (_inputs.TryGetValue(Resolve(data), out var input))
            throw new BadInputException($"{option}: the output's external data {given} would replace the input {input}; choose another " +
                $"path");
        if (!File.Exists(data)) return;
        if (!Posix.IsRegularFile(data)) throw new BadInputException($"{option}: the external-data path {given} is not a regular file");
        if (!_force && !(File.Exists(model) && PreviousOutputs.Is(model, OutputKind.Model)))
            throw new BadInputException($"{option}: {given} exists and does not belong to an earlier quantc model; remove it, choose " +
                $"another path, or pass --force");
    }

    private string StagingFolder(string option, string given, string dir)
    {
        if (_staging.TryGetValue(dir, out var s)) return s;
        try
        {
            CreateFolder(dir);
            RemoveStale(dir);
            s = Path.Combine(dir, $"{StagingPrefix}{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
            Directory.CreateDirectory(s);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"{option} {given}: cannot write in {dir} ({e.Message})", e);
        }
        _staging[dir] = s;
        return s;
    }

    private void CreateFolder(string dir)
    {
        var missing = new Stack<string>();
        for (var d = dir; !Directory.Exists(d); d = Path.GetDirectoryName(d)!)
        {
            if (File.Exists(d)) throw new IOException($"{d} is a file, not a folder");
            missing.Push(d);
        }
        while (missing.Count > 0)
        {
            var d = missing.Pop();
            Directory.CreateDirectory(d);
            _createdFolders.Add(d);
        }
    }

    /// <summary>Staging folders left by killed runs (their process is gone).</summary>
    private static void RemoveStale(string dir)
    {
        foreach (var d in Directory.EnumerateDirectories(dir, StagingPrefix + "*"))
        {
            var rest = Path.GetFileName(d)[StagingPrefix.Length..];
            int dash = rest.IndexOf('-');
            if (dash <= 0 || !int.TryParse(rest[..dash], out int pid) || pid == Environment.ProcessId || ProcessAlive(pid)) continue;
            try { Directory.Delete(d, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    private static bool ProcessAlive(int pid)
    {
        if (OperatingSystem.IsLinux()) return Directory.Exists($"/proc/{pid}");
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
    }

    private static string Describe(OutputKind k) => k switch
    {
        OutputKind.Model => "model",
        OutputKind.Report => "report",
        OutputKind.Html => "HTML page",
        OutputKind.GenaiFile => "GenAI folder file",
        OutputKind.Chart => "chart",
        _ => "statistics file",
    };

    /// <summary>
    /// The canonical path: absolute, every link resolved. For a path that does not exist yet, its
    /// deepest existing folder is resolved and the rest appended.
    /// </summary>
    public static string Resolve(string path)
    {
        string full = Path.GetFullPath(path);
        var rest = new Stack<string>();
        string cur = full;
        while (true)
        {
            if (File.Exists(cur) || Directory.Exists(cur))
            {
                string real = Posix.RealPath(cur) ?? cur;
                while (rest.Count > 0) real = Path.Combine(real, rest.Pop());
                return real;
            }
            string? parent = Path.GetDirectoryName(cur);
            if (parent is null) return full;
            rest.Push(Path.GetFileName(cur));
            cur = parent;
        }
    }
}

/// <summary>Recognises files that quantc wrote earlier (which an output may replace without --force).</summary>
public static class PreviousOutputs
{
    /// <summary>True when <paramref name="path"/> looks like an earlier quantc output of <paramref name="kind"/>.</summary>
    public static bool Is(string path, OutputKind kind)
    {
        try
        {
            return kind switch
            {
                OutputKind.Model => IsQuantcModel(path),
                OutputKind.Report => Head(path, 4096) is var r && r.TrimStart().StartsWith('{')
                    && (r.Contains("\"generator\": \"quantc\"", StringComparison.Ordinal) ||
                        r.Contains("\"recipe_description\"", StringComparison.Ordinal)),
                OutputKind.GenaiFile => File.Exists(Path.Combine(Path.GetDirectoryName(path)!, "model.onnx"))
                    && IsQuantcModel(Path.Combine(Path.GetDirectoryName(path)!, "model.onnx")),
                OutputKind.Chart => Head(path, 512).Contains(Reports.ReportChart.Marker, StringComparison.Ordinal),
                OutputKind.Html => Head(path, 4096) is var h && h.StartsWith("<!DOCTYPE html>", StringComparison.Ordinal)
                    && (h.Contains("<meta name=\"generator\" content=\"quantc\">", StringComparison.Ordinal) ||
                        h.Contains("<body data-status=", StringComparison.Ordinal)),
                _ => Head(path, 256).Contains("\"format\":\"quantc-calibration-stats/", StringComparison.Ordinal),
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    private static string Head(string path, int bytes)
    {
        using var f = File.OpenRead(path);
        var buf = new byte[bytes];
        int n = f.ReadAtLeast(buf, bytes, throwOnEndOfStream: false);
        return Encoding.UTF8.GetString(buf, 0, n);
    }

    /// <summary>
    /// Reads the top-level fields of a ModelProto without parsing the graph (it is skipped by
    /// seeking): quantc's models have producer_name "quantc" or a metadata key "quantc.*".
    /// </summary>
    private static bool IsQuantcModel(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
        while (f.Position < f.Length)
        {
            ulong tag = Varint(f);
            int field = (int)(tag >> 3), wire = (int)(tag & 7);
            switch (wire)
            {
                case 0: Varint(f); break;
                case 1: f.Seek(8, SeekOrigin.Current); break;
                case 5: f.Seek(4, SeekOrigin.Current); break;
                case 2:
                    ulong len = Varint(f);
                    if (len > (ulong)(f.Length - f.Position)) return false;
                    if (field == 2 && len < 256)
                    {
                        if (ReadString(f, (int)len) == "quantc") return true;
                    }
                    else if (field == 14 && len < 1 << 20)
                    {
                        // StringStringEntryProto: key = 1, value = 2.
                        long end = f.Position + (long)len;
                        while (f.Position < end)
                        {
                            ulong t = Varint(f);
                            if ((t & 7) != 2) return false;
                            ulong l = Varint(f);
                            if (l > (ulong)(end - f.Position)) return false;
                            if (t >> 3 == 1 && ReadString(f, (int)l).StartsWith("quantc.", StringComparison.Ordinal)) return true;
                            if (t >> 3 != 1) f.Seek((long)l, SeekOrigin.Current);
                        }
                    }
                    else f.Seek((long)len, SeekOrigin.Current);
                    break;
                default: return false;
            }
        }
        return false;
    }

    private static string ReadString(Stream s, int n)
    {
        var b = new byte[n];
        s.ReadExactly(b);
        return Encoding.UTF8.GetString(b);
    }

    private static ulong Varint(Stream s)
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            int b = s.ReadByte();
            if (b < 0) throw new IOException("truncated");
            v |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return v;
        }
        throw new IOException("bad varint");
    }
}

/// <summary>The two POSIX calls .NET does not expose: realpath and the file type from statx.</summary>
internal static partial class Posix
{
    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial IntPtr RealPathNative(string path, IntPtr resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(IntPtr p);

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int StatX(int dirfd, string path, int flags, uint mask, IntPtr buffer);

    /// <summary>The path with every link and dot resolved, or null where that is not available.</summary>
    public static string? RealPath(string path)
    {
        if (OperatingSystem.IsWindows()) return Path.GetFullPath(path);
        try
        {
            IntPtr p = RealPathNative(path, IntPtr.Zero);
            if (p == IntPtr.Zero) return null;
            try { return Marshal.PtrToStringUTF8(p); }
            finally { Free(p); }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    /// <summary>True for a regular file (following links); false for devices, pipes, sockets and folders.</summary>
    public static bool IsRegularFile(string path)
    {
        if (!OperatingSystem.IsLinux()) return File.Exists(path) && !path.StartsWith("/dev/", StringComparison.Ordinal);
        const int AtFdCwd = -100;
        const uint StatxType = 0x1;
        IntPtr buf = Marshal.AllocHGlobal(256);
        try
        {
            if (StatX(AtFdCwd, path, 0, StatxType, buf) != 0) return File.Exists(path);
            ushort mode = (ushort)Marshal.ReadInt16(buf, 28); // struct statx: stx_mode after six 32-bit/64-bit fields
            return (mode & 0xF000) == 0x8000;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return File.Exists(path); }
        finally { Marshal.FreeHGlobal(buf); }
    }
}
