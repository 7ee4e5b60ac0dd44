using Quantc.Models;
using Quantc.Onnx;

namespace Quantc.Models.Tests;

/// <summary>Hugging Face rope_scaling (linear and llama3) in the rotary caches, and its config parsing.</summary>
public sealed class RopeScalingTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-rope");

    public void Dispose() => _dir.Delete(recursive: true);

    private static LlamaConfig Cfg(RopeScaling? rs) => LlamaConfig.ForSize("tiny") with { RopeScaling = rs, MaxPositions = 64 };

    [Fact]
    public void LinearScalingStretchesPositions()
    {
        var plain = LlamaBuilder.RotaryCaches(Cfg(null), duplicate: true);
        var scaled = LlamaBuilder.RotaryCaches(Cfg(new RopeScaling("linear", 2)), duplicate: true);
        int w = plain.Width;
        for (int p = 0; p < 32; p++)
            for (int i = 0; i < w; i++)
                Assert.Equal(plain.Cos[p * w + i], scaled.Cos[2 * p * w + i]); // position 2p scaled by 2 = position p
    }

    [Fact]
    public void Llama3ScalingKeepsHighAndDividesLowFrequencies()
    {
        var rs = new RopeScaling("llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 64);
        double high = 1.0;                    // wavelength 2π < 64/4: kept
        double low = 2 * Math.PI / 1000;      // wavelength 1000 > 64: divided by 8
        Assert.Equal(high, rs.Apply(high));
        Assert.Equal(low / 8, rs.Apply(low), 12);
        double mid = 2 * Math.PI / 32;        // wavelength 32, between 16 and 64: blended
        double smooth = (64.0 / 32 - 1) / (4 - 1);
        Assert.Equal((1 - smooth) * mid / 8 + smooth * mid, rs.Apply(mid), 12);
    }

    [Fact]
    public void ConfigsWithRopeScalingAreRead()
    {
        string Config(string scaling) => $$"""
            {"model_type":"llama","vocab_size":257,"hidden_size":128,"intermediate_size":344,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":256,"rope_theta":500000.0,
             "rms_norm_eps":1e-5,"rope_scaling":{{scaling}}}
            """;
        var path = Path.Combine(_dir.FullName, "config.json");
        File.WriteAllText(path, Config("""{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"""));
        var c = HfConfig.Llama(path);
        Assert.Equal(new RopeScaling("llama3", 8, 1, 4, 8192), c.RopeScaling);
        File.WriteAllText(path, Config("""{"type":"linear","factor":2.0}"""));
        Assert.Equal("linear", HfConfig.Llama(path).RopeScaling!.Type);
        File.WriteAllText(path, Config("""{"rope_type":"yarn","factor":4.0}"""));
        var e = Assert.Throws<BadInputException>(() => HfConfig.Llama(path));
        Assert.Contains("yarn", e.Message);
    }
}
