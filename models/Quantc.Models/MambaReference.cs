namespace Quantc.Models;

/// <summary>
/// A plain C# forward pass of Mamba-1 (batch 1) from given conv and SSM states, written from the
/// recurrence rather than from the graph: the independent check of the Scan-based ONNX model.
/// </summary>
public sealed class MambaReference(MambaConfig c, Func<string, long[], float[]> weights)
{
    /// <summary>Per layer: the selective-scan input x after conv and SiLU ([token·d_inner]).</summary>
    public List<float[]> ScanInputs { get; } = [];
    /// <summary>Per layer: out_proj's input y·SiLU(z) ([token·d_inner]).</summary>
    public List<float[]> OutProjInputs { get; } = [];

    /// <summary>
    /// Runs <paramref name="ids"/> from the states (zeros when null; updated in place when given) and returns the logits [token·vocab].
    /// </summary>
    public float[] Forward(long[] ids, float[][]? convStates = null, float[][]? ssmStates = null)
    {
        int L = ids.Length, d = c.HiddenSize, e = c.InnerSize, n = c.StateSize, r = c.TimeStepRank, k = c.ConvKernel;
        convStates ??= Enumerable.Range(0, c.NumLayers).Select(_ => new float[e * (k - 1)]).ToArray();
        ssmStates ??= Enumerable.Range(0, c.NumLayers).Select(_ => new float[e * n]).ToArray();
        ScanInputs.Clear();
        OutProjInputs.Clear();
        var emb = weights("backbone.embeddings.weight", [c.VocabSize, d]);
        var h = new float[L * d];
        for (int t = 0; t < L; t++) Array.Copy(emb, ids[t] * d, h, t * d, d);
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"backbone.layers.{l}.";
            var x0 = RmsNorm(h, L, weights(p + "norm.weight", [d]));
            var xz = MatMul(x0, L, d, weights(p + "mixer.in_proj.weight", [d, 2 * e]), 2 * e);
            var convW = weights(p + "mixer.conv1d.weight", [e, 1, k]);
            var convB = weights(p + "mixer.conv1d.bias", [e]);
            var xc = new float[L * e];
            var cs = convStates[l];
            for (int ch = 0; ch < e; ch++)
            {
                // seq = [state (k−1 values), x_0 … x_{L−1}]
                var seq = new float[k - 1 + L];
                for (int j = 0; j < k - 1; j++) seq[j] = cs[ch * (k - 1) + j];
                for (int t = 0; t < L; t++) seq[k - 1 + t] = xz[t * 2 * e + ch];
                for (int t = 0; t < L; t++)
                {
                    double acc = convB[ch];
                    for (int j = 0; j < k; j++) acc += convW[ch * k + j] * seq[t + j];
                    xc[t * e + ch] = (float)(acc / (1 + Math.Exp(-acc)));
                }
                for (int j = 0; j < k - 1; j++) cs[ch * (k - 1) + j] = seq[L + j];
            }
            ScanInputs.Add(xc);
            var dbc = MatMul(xc, L, e, weights(p + "mixer.x_proj.weight", [e, r + 2 * n]), r + 2 * n);
            var dtW = weights(p + "mixer.dt_proj.weight", [r, e]);
            var dtB = weights(p + "mixer.dt_proj.bias", [e]);
            var aLog = weights(p + "mixer.A_log", [e, n]);
            var dSkip = weights(p + "mixer.D", [e]);
            var y = new float[L * e];
            var st = ssmStates[l];
            for (int t = 0; t < L; t++)
            {
                int o = t * (r + 2 * n);
                for (int ch = 0; ch < e; ch++)
                {
                    double dt = dtB[ch];
                    for (int j = 0; j < r; j++) dt += dbc[o + j] * dtW[j * e + ch];
                    double delta = dt > 20 ? dt : Math.Log(1 + Math.Exp(dt));
                    double x = xc[t * e + ch], acc = 0;
                    for (int s = 0; s < n; s++)
                    {
                        double a = -Math.Exp(aLog[ch * n + s]);
                        double hs = Math.Exp(delta * a) * st[ch * n + s] + delta * x * dbc[o + r + s];
                        st[ch * n + s] = (float)hs;
                        acc += hs * dbc[o + r + n + s];
                    }
                    double z = xz[t * 2 * e + e + ch];
                    y[t * e + ch] = (float)((acc + dSkip[ch] * x) * (z / (1 + Math.Exp(-z))));
                }
            }
            OutProjInputs.Add(y);
            var outp = MatMul(y, L, e, weights(p + "mixer.out_proj.weight", [e, d]), d);
            for (int i = 0; i < h.Length; i++) h[i] += outp[i];
        }
        var f = RmsNorm(h, L, weights("backbone.norm_f.weight", [d]));
        return MatMul(f, L, d, weights("lm_head.weight", [d, c.VocabSize]), c.VocabSize);
    }

    private float[] RmsNorm(float[] x, int L, float[] g)
    {
        int d = g.Length;
        var y = new float[x.Length];
        for (int t = 0; t < L; t++)
        {
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)x[t * d + i] * x[t * d + i];
            double rs = 1 / Math.Sqrt(ss / d + c.RmsNormEps);
            for (int i = 0; i < d; i++) y[t * d + i] = (float)(x[t * d + i] * rs * g[i]);
        }
        return y;
    }

    private static float[] MatMul(float[] x, int L, int inDim, float[] w, int outDim)
    {
        var y = new float[L * outDim];
        var acc = new double[outDim];
        for (int t = 0; t < L; t++)
        {
            Array.Clear(acc);
            for (int i = 0; i < inDim; i++)
            {
                double xv = x[t * inDim + i];
                if (xv == 0) continue;
                for (int j = 0; j < outDim; j++) acc[j] += xv * w[i * outDim + j];
            }
            for (int j = 0; j < outDim; j++) y[t * outDim + j] = (float)acc[j];
        }
        return y;
    }
}
