using Quantc.Core.Numerics;

// Goethals–Seidel sequence search (issue 6).
//   search <w> [--seed S] [--max-steps N]   tabu search for four ±1 sequences of odd length w whose
//                                            periodic autocorrelations sum to zero at every shift ≠ 0
//   verify                                   re-checks the sequences committed in Quantc.Core
//                                            (Hadamard.GoethalsSeidelSequences) and the matrices built from them
// Deterministic: the same w and seed give the same sequences.
return args switch
{
    ["verify"] => Verify(),
    ["search", var w, .. var rest] when int.TryParse(w, out int len) && len is >= 3 and <= 199 && len % 2 == 1 => Search(len, rest),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: HadamardSearch search <odd w in 3..199> [--seed S] [--max-steps N] | verify");
    return 2;
}

static int Search(int w, string[] rest)
{
    int seed = 1;
    long maxSteps = 2_000_000_000;
    for (int i = 0; i + 1 < rest.Length; i += 2)
    {
        if (rest[i] == "--seed" && int.TryParse(rest[i + 1], out int s)) seed = s;
        else if (rest[i] == "--max-steps" && long.TryParse(rest[i + 1], out long n)) maxSteps = n;
        else return Usage();
    }
    if (rest.Length % 2 != 0) return Usage();
    var sw = System.Diagnostics.Stopwatch.StartNew();
    var found = GsSearch.Run(w, seed, maxSteps, out long steps, out int restarts);
    if (found is null)
    {
        Console.WriteLine($"w={w} seed={seed}: nothing found in {steps} steps ({restarts} restarts, {sw.Elapsed.TotalSeconds:F1} s)");
        return 1;
    }
    var strings = found.Select(GsSearch.ToPlusMinus).ToArray();
    if (!GsSearch.IsGoethalsSeidel(strings)) throw new InvalidOperationException("search returned a non-solution");
    Console.WriteLine($"w={w} seed={seed}: found after {steps} steps ({restarts} restarts, {sw.Elapsed.TotalSeconds:F1} s)");
    foreach (var s in strings) Console.WriteLine($"  \"{s}\"  (sum {s.Count(c => c == '+') * 2 - s.Length})");
    return 0;
}

static int Verify()
{
    int bad = 0;
    foreach (int m in Hadamard.Orders)
    {
        var seqs = Hadamard.GoethalsSeidelSequences(m);
        if (seqs is null) continue;
        bool paf = GsSearch.IsGoethalsSeidel(seqs);
        var h = Hadamard.BaseMatrix(m);
        bool orthogonal = true;
        for (int i = 0; i < m && orthogonal; i++)
            for (int j = 0; j < m && orthogonal; j++)
            {
                int dot = 0;
                for (int k = 0; k < m; k++) dot += h[i * m + k] * h[j * m + k];
                orthogonal = dot == (i == j ? m : 0);
            }
        Console.WriteLine($"order {m} = 4·{seqs[0].Length}: summed PAF zero: {paf}; H·Hᵀ = {m}·I: {orthogonal}");
        if (!paf || !orthogonal) bad++;
    }
    return bad == 0 ? 0 : 1;
}

/// <summary>Tabu search on Σ_s (Σ_k PAF_k(s))² over single-element flips, with restarts.</summary>
internal static class GsSearch
{
    public static string ToPlusMinus(int[] x) => string.Concat(x.Select(v => v > 0 ? '+' : '-'));

    /// <summary>True when the four ±1 strings have summed periodic autocorrelation 0 at every nonzero shift.</summary>
    public static bool IsGoethalsSeidel(IReadOnlyList<string> seqs)
    {
        if (seqs.Count != 4) return false;
        int w = seqs[0].Length;
        if (seqs.Any(s => s.Length != w || s.Any(c => c != '+' && c != '-'))) return false;
        for (int s = 1; s < w; s++)
        {
            int total = 0;
            foreach (var q in seqs)
                for (int j = 0; j < w; j++) total += (q[j] == '+' ? 1 : -1) * (q[(j + s) % w] == '+' ? 1 : -1);
            if (total != 0) return false;
        }
        return true;
    }

    public static int[][]? Run(int w, int seed, long maxSteps, out long steps, out int restarts)
    {
        var rng = new Random(seed);
        int half = (w - 1) / 2;
        var x = new int[4][];
        var p = new int[half + 1];          // summed PAF at shifts 1..half (PAF(s) = PAF(w - s))
        var tabu = new long[4 * w];
        steps = 0;
        restarts = 0;
        long stall = 20L * w * w;
        while (steps < maxSteps)
        {
            for (int k = 0; k < 4; k++) x[k] = Enumerable.Range(0, w).Select(_ => rng.Next(2) * 2 - 1).ToArray();
            Array.Clear(p);
            for (int k = 0; k < 4; k++)
                for (int s = 1; s <= half; s++)
                    for (int j = 0; j < w; j++) p[s] += x[k][j] * x[k][(j + s) % w];
            Array.Clear(tabu);
            long cost = Cost(p), best = cost, lastImprove = steps;
            while (steps < maxSteps && steps - lastImprove < stall)
            {
                if (cost == 0) return x;
                steps++;
                long bestDelta = long.MaxValue;
                int bestMove = -1, ties = 0;
                for (int k = 0; k < 4; k++)
                {
                    var xk = x[k];
                    for (int i = 0; i < w; i++)
                    {
                        // Flipping x_i changes PAF_k(s) by −2·x_i·(x_{i+s} + x_{i−s}).
                        long delta = 0;
                        int xi = xk[i];
                        for (int s = 1; s <= half; s++)
                        {
                            int d = -2 * xi * (xk[(i + s) % w] + xk[(i - s + w) % w]);
                            delta += d * (2 * p[s] + d);
                        }
                        int move = k * w + i;
                        bool allowed = tabu[move] <= steps || cost + delta < best;
                        if (!allowed) continue;
                        if (delta < bestDelta) { bestDelta = delta; bestMove = move; ties = 1; }
                        else if (delta == bestDelta && rng.Next(++ties) == 0) bestMove = move;
                    }
                }
                if (bestMove < 0) continue;
                int kk = bestMove / w, ii = bestMove % w;
                var xs = x[kk];
                for (int s = 1; s <= half; s++) p[s] += -2 * xs[ii] * (xs[(ii + s) % w] + xs[(ii - s + w) % w]);
                xs[ii] = -xs[ii];
                cost += bestDelta;
                tabu[bestMove] = steps + w / 4 + rng.Next(w / 2 + 1);
                if (cost < best) { best = cost; lastImprove = steps; }
            }
            restarts++;
        }
        return null;
    }

    private static long Cost(int[] p)
    {
        long c = 0;
        for (int s = 1; s < p.Length; s++) c += (long)p[s] * p[s];
        return c;
    }
}
