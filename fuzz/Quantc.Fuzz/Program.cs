using Quantc.Fuzz;

// quantc-fuzz afl TARGET            one target under afl-fuzz (SharpFuzz's fork server; see fuzz/run.sh)
// quantc-fuzz seed DIR              writes the generated part of the seed corpus (micro decoders, .npy arrays) under DIR
// quantc-fuzz replay TARGET PATH…   every file (or every file of a folder) through the target in this process:
//                                   exit 1 naming the first input that ends otherwise than accepted or refused cleanly
if (args is ["afl", var target])
{
    if (!Targets.Names.Contains(target)) return Usage();
    SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
    {
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        Targets.Run(target, buffer.ToArray());
    });
    return 0;
}
if (args.Length >= 3 && args[0] == "replay" && Targets.Names.Contains(args[1]))
{
    var files = args.Skip(2).SelectMany<string, string>(p => Directory.Exists(p) ? Directory.EnumerateFiles(p).Order(StringComparer.Ordinal) : [p]).ToList();
    int accepted = 0, refused = 0;
    foreach (var f in files)
    {
        try
        {
            if (Targets.Run(args[1], File.ReadAllBytes(f))) accepted++;
            else refused++;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"quantc-fuzz: {args[1]}: {f}: {e.GetType().Name}: {e.Message}");
            Console.Error.WriteLine(string.Join('\n', (e.StackTrace ?? "").Split('\n').Take(6)));
            return 1;
        }
    }
    Console.WriteLine($"{args[1]}: {files.Count} inputs, {accepted} accepted, {refused} refused as bad input, 0 crashes");
    return 0;
}
if (args is ["seed", var dir])
{
    Seeds.Write(dir);
    return 0;
}
return Usage();

static int Usage()
{
    Console.Error.WriteLine("usage: quantc-fuzz afl TARGET | quantc-fuzz replay TARGET PATH... | quantc-fuzz seed DIR " +
        $"(targets: {string.Join(", ", Targets.Names)})");
    return 2;
}
