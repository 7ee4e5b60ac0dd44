using System.Text;
using System.Text.RegularExpressions;

namespace Quantc.Models;

/// <summary>
/// Writes quantc's calibration and evaluation text: English prose in several registers
/// (technical explanations, field notes, kitchen instructions, town news, letters), produced
/// from hand-written sentence templates and word lists with a seeded counter-based generator,
/// so the committed files (<c>models/calib.txt</c>, <c>models/eval.txt</c>) can be regenerated
/// byte for byte. The evaluation part uses a different seed and different section order, so it
/// is held out from calibration at the level of documents, not just offsets.
/// </summary>
public static partial class TextCorpus
{
    /// <summary>Target sizes in bytes of the two parts.</summary>
    public const int CalibrationBytes = 160_000, EvaluationBytes = 48_000;

    /// <summary>The calibration part.</summary>
    public static string Calibration() => Generate(1, CalibrationBytes);

    /// <summary>The held-out evaluation part.</summary>
    public static string Evaluation() => Generate(2, EvaluationBytes);

    /// <summary>Sections of prose up to about <paramref name="bytes"/> bytes (whole sections only).</summary>
    public static string Generate(long seed, int bytes)
    {
        var g = new Gen(RandomStream.For(seed, "corpus"));
        var sb = new StringBuilder();
        while (sb.Length < bytes)
        {
            var topic = Topics[g.Int(Topics.Length)];
            string section = topic.Section(g);
            sb.Append(section).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>A cursor over a random stream.</summary>
    private sealed class Gen(RandomStream rs)
    {
        private long _i;
        public int Int(int n) => rs.NextInt(_i++, n);
        public double U() => rs.Uniform(_i++);
        public T Pick<T>(IReadOnlyList<T> xs) => xs[Int(xs.Count)];
    }

    /// <summary>A register of text: a title maker, slots (word lists) and sentence templates.</summary>
    private sealed class Topic(string[] titles, Dictionary<string, string[]> slots, string[] openers, string[] sentences, string[] closers)
    {
        public string Section(Gen g)
        {
            var sb = new StringBuilder();
            var bound = new Dictionary<string, string>(); // {Name!} keeps one choice for the whole section
            sb.Append(Sentence(g.Pick(titles), g, bound)).Append("\n\n");
            int paragraphs = 2 + g.Int(4);
            var used = new HashSet<int>();
            for (int p = 0; p < paragraphs; p++)
            {
                var para = new List<string>();
                if (p == 0) para.Add(Sentence(g.Pick(openers), g, bound));
                int n = 3 + g.Int(4);
                for (int s = 0; s < n; s++)
                {
                    int k = g.Int(sentences.Length);
                    for (int tries = 0; tries < 4 && !used.Add(k); tries++) k = g.Int(sentences.Length);
                    para.Add(Sentence(sentences[k], g, bound));
                }
                if (p == paragraphs - 1) para.Add(Sentence(g.Pick(closers), g, bound));
                sb.Append(string.Join(" ", para)).Append('\n');
                if (p < paragraphs - 1) sb.Append('\n');
            }
            return sb.ToString();
        }

        private string Sentence(string template, Gen g, Dictionary<string, string> bound)
        {
            string s = Fill(template, g, bound);
            return s.Length > 0 ? char.ToUpperInvariant(s[0]) + s[1..] : s;
        }

        private string Fill(string template, Gen g, Dictionary<string, string> bound)
        {
            string s = SlotRegex().Replace(template, m =>
            {
                string name = m.Groups[1].Value;
                bool keep = m.Groups[2].Success;
                if (keep && bound.TryGetValue(name, out var v)) return v;
                string choice = name switch
                {
                    "N" => (2 + g.Int(98)).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    "BIG" => (100 + g.Int(9900)).ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                    "DEC" => (g.Int(1000) / 100.0).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture),
                    "PCT" => (1 + g.Int(99)).ToString(System.Globalization.CultureInfo.InvariantCulture) + "%",
                    "YEAR" => (1890 + g.Int(135)).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    "RECENT" => (1995 + g.Int(30)).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    "FEW" => (2 + g.Int(8)).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    _ => Fill(g.Pick(slots.TryGetValue(name, out var xs) ? xs : throw new InvalidOperationException($"no slot {name}")), g,
                        bound),
                };
                if (keep) bound[name] = choice;
                return choice;
            });
            return s;
        }
    }

    [GeneratedRegex(@"\{([A-Za-z]+)(!)?\}")]
    private static partial Regex SlotRegex();

    private static readonly Topic[] Topics =
    [
        // ------------------------------------------------------------ technical explanations
        new(
            ["Notes on {subject!}", "How {subject!} works", "A short guide to {subject!}", "Why {subject!} matters",
                "{subject!} in practice"],
            new()
            {
                ["subject"] = ["quantization", "caching", "memory allocation", "scheduling", "compression", "floating point",
                    "vector instructions", "load balancing", "version control", "code review", "logging", "error handling", "unit testing",
                    "dependency management", "graph compilation", "numerical stability"],
                ["thing"] = ["the compiler", "the runtime", "the scheduler", "the allocator", "the parser", "the cache", "the kernel",
                    "the optimizer", "the linker", "the test suite", "the build system", "the profiler"],
                ["unit"] = ["a tensor", "a buffer", "a page", "a block", "a request", "a record", "a message", "a thread", "a channel",
                    "a layer", "a matrix", "a file"],
                ["units"] = ["tensors", "buffers", "pages", "blocks", "requests", "records", "messages", "threads", "channels", "layers",
                    "matrices", "files"],
                ["adj"] = ["small", "large", "fast", "slow", "stable", "fragile", "simple", "careful", "predictable", "expensive", "cheap",
                    "narrow", "wide"],
                ["verb"] = ["reads", "writes", "copies", "checks", "rounds", "stores", "moves", "splits", "merges", "sorts", "measures",
                    "rewrites"],
                ["metric"] = ["latency", "throughput", "memory use", "accuracy", "error", "power draw", "startup time", "code size"],
                ["person"] = ["an engineer", "a reviewer", "a new team member", "the maintainer", "an operator", "a student",
                    "the on-call engineer"],
                ["bits"] = ["two", "three", "four", "six", "eight"],
                ["reason"] = ["the hardware rewards it", "it keeps the common case simple", "the data is rarely uniform",
                    "mistakes are cheap to find early", "nobody reads documentation twice", "memory is slower than arithmetic",
                    "the rare case is where the bugs live"],
            },
            [
                "This note explains {subject!} for readers who have used it but never looked inside.",
                "Most people meet {subject!} long before they need to understand it.",
                "It is easy to treat {subject!} as a detail, until the day it is not.",
            ],
            [
                "{thing} {verb} {unit} at a time, and that choice shapes everything that follows.",
                "When {units} are small, {thing} can keep them in memory; when they are large, it has to stream them.",
                "A common mistake is to optimize {metric} before measuring it.",
                "The first version should be {adj} and correct; speed comes later, once the tests agree.",
                "In our measurements, {metric} improved by {PCT} after the change, while {metric} stayed the same.",
                "Consider {unit} with {N} entries: each entry needs a scale, and the scale needs a place to live.",
                "{person} once asked why {thing} {verb} each of the {units} twice; the honest answer was that {reason}.",
                "Rounding to the nearest level loses at most half a step, which is why the step size matters more than the number of " +
                    "levels.",
                "If a few {units} are much larger than the rest, a single range for all of them wastes most of its levels.",
                "The trick is to move the difficulty somewhere it is cheaper to handle, for example from the activations into the weights.",
                "Every cache is a bet that the past predicts the future, and most of the time the bet pays.",
                "{thing} keeps a table of {BIG} entries, one for each {unit} it has seen.",
                "Errors should be reported where they happen, with the name of the {unit} and the reason, not three layers later.",
                "A test that runs in {N} milliseconds gets run; a test that takes {N} minutes gets skipped.",
                "The design keeps {units} immutable, so that two threads can read them without locks.",
                "We chose {bits} bits because the hardware has instructions for it and the error stayed below {DEC} percent.",
                "Think of {thing} as a pipeline: each stage {verb} what the previous one produced and hands it on.",
                "Deterministic output means the same input gives the same bytes, which makes differences easy to review.",
                "Large files are read through memory maps, so only the pages that are touched ever reach memory.",
                "It took {person} {N} days to find the cause: a {adj} assumption about the order of {units}.",
                "Averages hide outliers, so we also record the maximum and a few percentiles for each of the {units}.",
                "When in doubt, {thing} falls back to the slow path, which is slow but always correct.",
                "The interface is {adj} on purpose: one function to build, one to run, and one to explain what happened.",
                "Because {reason}, the default is conservative and the fast path must be asked for.",
                "A good benchmark states the machine, the input and the number of runs, and it reports the spread, not only the best " +
                    "result.",
                "Half of the work was deleting code that had stopped being used in {RECENT}.",
                "The numbers in the table are medians over {N} runs on a quiet machine.",
            ],
            [
                "None of this is new, but it is worth writing down.",
                "The rest is detail, and the details are in the code.",
                "In short: measure first, keep it simple, and write the test before the fix.",
                "Next time we will look at what happens when the assumptions above do not hold.",
            ]),

        // ------------------------------------------------------------ field notes
        new(
            ["Field notes: {place!}", "A walk to {place!}", "Morning at {place!}", "Notes from {place!}", "The road to {place!}"],
            new()
            {
                ["place"] = ["the northern lake", "the old quarry", "Hollow Creek", "the salt marsh", "the ridge above the village",
                    "the pine forest", "the river mouth", "the abandoned mill", "the high meadow", "the harbour wall"],
                ["bird"] = ["a heron", "two crows", "a kestrel", "a flock of starlings", "a wren", "a pair of swans", "a woodpecker",
                    "three gulls", "an owl", "a kingfisher"],
                ["weather"] = ["a cold wind from the east", "thin rain", "low cloud", "bright sun after a frost", "fog that lifted slowly",
                    "warm, still air", "a sky the colour of slate", "a gusty wind that came and went"],
                ["plant"] = ["the birches", "the reeds", "the heather", "the blackthorn", "the ferns", "the old oaks", "the wild garlic",
                    "the gorse", "the moss on the wall", "the willows"],
                ["sound"] = ["the water over the stones", "a distant tractor", "the wind in the wires", "church bells from the valley",
                    "a dog barking far off", "ice cracking at the edge", "rain on the leaves"],
                ["time"] = ["just after dawn", "in the late afternoon", "around noon", "before breakfast", "as the light was going",
                    "in the middle of the morning"],
                ["friend"] = ["my sister", "an old friend", "a neighbour", "my father"],
                ["companion"] = ["my sister", "an old friend", "the dog", "a neighbour", "nobody but myself", "my father"],
            },
            [
                "I set out {time} with {companion}; there was {weather}.",
                "We reached {place!} {time}, later than planned.",
                "The path to {place!} was wetter than I remembered.",
            ],
            [
                "{plant} had begun to turn, and the ground under them was soft.",
                "We stopped by the gate and listened to {sound}.",
                "{bird} crossed the path ahead of us and settled on a fence post.",
                "There was {weather}, so we kept walking to stay warm.",
                "The map showed a bridge, but the bridge had been gone for years.",
                "I counted {N} sheep on the far slope, all facing the same way.",
                "Someone had stacked the fallen branches into a neat pile beside {plant}.",
                "By the water the air smelled of mud and cut grass.",
                "{friend} pointed out {bird} that I would have missed.",
                "We ate our bread on a flat rock and did not say much.",
                "The light changed every few minutes, and with it the colour of the hills.",
                "An old sign, put up in {YEAR}, warned of deep water and loose stones.",
                "The only sound for a while was {sound}.",
                "Near the top the wind was strong enough to lean on.",
                "I wrote the date in the notebook and drew a rough sketch of {plant}.",
                "On the way back we took the lower path, which follows the stream for {N} minutes.",
                "A farmer waved from his yard and called something we could not hear.",
                "Tracks in the mud suggested deer, perhaps {FEW} of them, passing in the night.",
                "The village below looked small and very still.",
                "{bird} called twice and then fell silent.",
            ],
            [
                "We were home before dark, tired and pleased.",
                "Next month, if the weather holds, we will go further.",
                "It was not a long walk, but it was the best part of the week.",
                "I will go back when {plant} are in flower.",
            ]),

        // ------------------------------------------------------------ kitchen
        new(
            ["Recipe: {dish!}", "How to make {dish!}", "Cooking for friends: {dish!}", "A simple {dish!}"],
            new()
            {
                ["dish"] = ["lentil soup", "bread with seeds", "roast vegetables", "apple cake", "tomato sauce", "potato gratin",
                    "fish stew", "barley salad", "onion tart", "pancakes", "vegetable curry", "rice pudding"],
                ["ing"] = ["two onions", "a handful of herbs", "three cloves of garlic", "a cup of lentils", "a pinch of salt",
                    "half a lemon", "a spoon of butter", "four ripe tomatoes", "a little olive oil", "two eggs", "a glass of milk",
                    "a bunch of parsley", "some black pepper"],
                ["cut"] = ["chop", "slice", "rinse", "dice"],
                ["cook"] = ["stir", "simmer", "cook", "fry"],
                ["veg"] = ["two onions", "three cloves of garlic", "four ripe tomatoes", "a bunch of parsley", "two carrots",
                    "a stick of celery", "a leek"],
                ["seasoning"] = ["a pinch of salt", "some black pepper", "a squeeze of lemon", "a little more butter",
                    "a spoon of vinegar"],
                ["topping"] = ["grated cheese", "a spoon of yoghurt", "chopped herbs", "a little honey", "toasted seeds"],
                ["vessel"] = ["a heavy pan", "a large bowl", "the oven dish", "a small pot", "a wide frying pan", "a baking tray"],
                ["temp"] = ["160", "180", "190", "200", "220"],
                ["sign"] = ["the onions turn soft and golden", "the sauce coats the back of a spoon", "the top is brown",
                    "a knife comes out clean", "the lentils are tender", "it smells sweet"],
            },
            [
                "This {dish!} takes about {N} minutes and feeds four.",
                "My grandmother made {dish!} every Sunday, and this is close to her version.",
                "You will need {ing}, {ing}, {ing} and {ing}.",
            ],
            [
                "First {cut} {veg} and put them in {vessel}.",
                "Heat {vessel} over a medium flame and add {ing}.",
                "{cook} gently until {sign}.",
                "Add {veg}, then {cook} for another few minutes.",
                "Do not rush this step; it is where most of the flavour comes from.",
                "If the mixture looks dry, add a splash of water.",
                "Set the oven to {temp} degrees and let it warm while you work.",
                "Keep {ing} aside for the end.",
                "Taste, and add {seasoning} if it needs it.",
                "Leave it to rest for {N} minutes before serving.",
                "It keeps for {FEW} days in a cool place, and it is better on the second day.",
                "Children like it with {topping} on top.",
                "Cook until {sign}, which usually takes {N} minutes.",
                "Serve warm with bread, or cold the next day.",
            ],
            [
                "That is all; it is a forgiving recipe.",
                "Write down what you changed, so you can do it again.",
                "Enjoy it with people you like.",
            ]),

        // ------------------------------------------------------------ town news
        new(
            ["Town news: {event!}", "Local report: {event!}", "This week: {event!}", "Council notes: {event!}"],
            new()
            {
                ["event"] = ["the new library opens", "the bridge repairs", "the autumn market", "the school concert",
                    "the bus timetable changes", "the river clean-up", "the football final", "the flower show",
                    "the road closure on Mill Street"],
                ["official"] = ["the mayor", "a council spokesperson", "the head teacher", "the organisers", "the fire chief",
                    "the town engineer", "a local shop owner"],
                ["group"] = ["residents", "volunteers", "parents", "shopkeepers", "pupils", "members of the choir", "local farmers",
                    "cyclists"],
                ["day"] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
                ["place"] = ["the town hall", "the market square", "the community centre", "the old station", "the park by the river",
                    "the primary school"],
            },
            [
                "After {N} months of planning, {event!} finally happened on {day}.",
                "{group} gathered at {place} on {day} for {event!}.",
                "There was a good turnout for {event!} despite the weather.",
            ],
            [
                "According to {official}, about {BIG} people attended.",
                "{official} thanked {group} for their patience.",
                "The work cost {BIG} pounds, slightly less than expected.",
                "Some {group} said the signs were hard to read.",
                "A second meeting will be held at {place} on {day} evening.",
                "The project was first proposed in {YEAR} and delayed twice.",
                "{group} raised {BIG} pounds for the hospice.",
                "Parking will be limited until the end of the month.",
                "{official} said the town should be proud of what {group} had achieved.",
                "Questions can be sent to the council office, which is open every {day}.",
                "The next event is planned for {day}, weather permitting.",
                "Traffic on the main road was diverted for {FEW} hours.",
                "Photographs from the day are on display at {place}.",
            ],
            [
                "More details will follow in next week's issue.",
                "The council meets again next month.",
                "Thanks to everyone who helped.",
            ]),

        // ------------------------------------------------------------ letters
        new(
            ["Letter to {name!}", "A reply to {name!}", "Dear {name!}"],
            new()
            {
                ["name"] = ["Anna", "Tom", "Margaret", "Sam", "Elena", "David", "Ruth", "Peter", "Clara", "Joe"],
                ["news"] = ["the garden is finally growing", "the roof has been fixed", "I have started a new job",
                    "the children are back at school", "we bought a second-hand piano", "the cat has gone missing again",
                    "I am learning to bake bread"],
                ["feeling"] = ["glad", "relieved", "a little tired", "happier than last year", "busy but well", "restless"],
                ["plan"] = ["go to the coast for a week", "take the train north", "repaint the kitchen", "walk the coast path",
                    "finish the book", "plant more trees"],
            },
            [
                "Thank you for your letter, which arrived on a grey morning and cheered me up.",
                "It has been too long since I last wrote, and I am sorry for that.",
                "Your news made me smile; I read the letter twice.",
            ],
            [
                "Here, {news}.",
                "I am {feeling}, and the days are going quickly.",
                "We hope to {plan} before the end of the year.",
                "Do you remember the summer of {YEAR}, when it rained for {N} days?",
                "Please give my love to everyone at home.",
                "The house is quiet in the evenings, and I read more than I used to.",
                "I have kept the photograph you sent; it is on the shelf by the window.",
                "If you come in the spring, we could {plan} together.",
                "Tell me how the new work is going, and whether you still like it.",
                "Money is tight, but we manage, and we eat well.",
                "I think of you often, especially now that {news}.",
            ],
            [
                "Write soon, and look after yourself.",
                "With love, as always.",
                "Until next time, warm wishes from all of us.",
            ]),
    ];
}
