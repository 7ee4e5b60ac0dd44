using System.Text;
using System.Text.Json;
using Quantc.Core.Diff;
using Quantc.Ir;

namespace Quantc.Core.Reports;

/// <summary>
/// The HTML page of a graph diff: model B's graph drawn layer by layer (a box per layer, arrows
/// for dataflow between layers, ranked top to bottom), changed layers highlighted, and a layer's
/// node and initializer changes shown on click.
/// </summary>
public static class DiffHtml
{
    private sealed record Box(string Layer, int Rank, int Slot, int Nodes, string Ops);

    /// <summary>Renders the page for <paramref name="diff"/>, drawing the graph of <paramref name="b"/>.</summary>
    public static string Render(DiffResult diff, Model b, string titleA, string titleB)
    {
        var g = b.Graph;
        var order = g.TopologicalOrder();
        var layerOf = order.ToDictionary(n => n, GraphDiff.LayerOf);
        var layers = new List<string>();
        foreach (var n in order) if (!layers.Contains(layerOf[n])) layers.Add(layerOf[n]);
        // Removed-only layers (in A, gone from B) are drawn too.
        foreach (var l in diff.Layers) if (!layers.Contains(l.Layer)) layers.Add(l.Layer);

        var edges = new HashSet<(string From, string To)>();
        foreach (var n in order)
            foreach (var v in n.Inputs)
                if (v?.Producer is { } p && layerOf.TryGetValue(p, out var from) && from != layerOf[n]) edges.Add((from, layerOf[n]));

        // Rank = longest path from a source, in the layer DAG (cycles between layers are broken by first-seen order).
        var index = layers.Select((l, i) => (l, i)).ToDictionary(x => x.l, x => x.i);
        var rank = layers.ToDictionary(l => l, _ => 0);
        foreach (var l in layers)
            foreach (var e in edges.Where(e => e.To == l && index[e.From] < index[l]))
                rank[l] = Math.Max(rank[l], rank[e.From] + 1);
        var slots = new Dictionary<int, int>();
        var boxes = new List<Box>();
        foreach (var l in layers)
        {
            int r = rank[l];
            int s = slots.GetValueOrDefault(r);
            slots[r] = s + 1;
            var nodes = order.Where(n => layerOf[n] == l).ToList();
            boxes.Add(new Box(l, r, s, nodes.Count, string.Join(" ", nodes.Select(n => n.OpType).Distinct().Take(4))));
        }

        const int w = 260, h = 44, gx = 30, gy = 34;
        int width = (slots.Values.DefaultIfEmpty(1).Max()) * (w + gx) + gx;
        int height = (rank.Values.DefaultIfEmpty(0).Max() + 1) * (h + gy) + gy;
        var summaries = diff.Layers.ToDictionary(l => l.Layer, StringComparer.Ordinal);
        var pos = boxes.ToDictionary(x => x.Layer, x => (X: gx + x.Slot * (w + gx), Y: gy + x.Rank * (h + gy)));

        var svg = new StringBuilder();
        svg.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"layer " +
            $"graph\">");
        svg.Append("<defs><marker id=\"arr\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" " +
            "orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#98a1ad\"/></marker></defs>");
        foreach (var (from, to) in edges.OrderBy(e => e.From, StringComparer.Ordinal).ThenBy(e => e.To, StringComparer.Ordinal))
        {
            var (x1, y1) = pos[from];
            var (x2, y2) = pos[to];
            svg.Append($"<line x1=\"{x1 + w / 2}\" y1=\"{y1 + h}\" x2=\"{x2 + w / 2}\" y2=\"{y2}\" stroke=\"#98a1ad\" " +
                $"stroke-width=\"1.2\" marker-end=\"url(#arr)\"/>");
        }
        for (int i = 0; i < boxes.Count; i++)
        {
            var bx = boxes[i];
            var (x, y) = pos[bx.Layer];
            string fill = "#f1f3f5", stroke = "#c3c9d0";
            if (summaries.TryGetValue(bx.Layer, out var s))
            {
                (fill, stroke) = s.NodesRemoved > 0 && bx.Nodes == 0 ? ("#fde2e1", "#b3261e")
                    : s.NodesAdded > 0 && s.NodesChanged == 0 && s.InitializersChanged == 0 ? ("#dff3e4", "#1b7f3b")
                    : ("#fff1d6", "#c77700");
            }
            string label = bx.Layer.Length > 38 ? "…" + bx.Layer[^37..] : bx.Layer;
            string sub = s is not null && s.Summary.Length > 0 ? s.Summary : bx.Ops;
            if (sub.Length > 42) sub = sub[..41] + "…";
            svg.Append($"<g class=\"layer\" data-i=\"{i}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" " +
                $"fill=\"{fill}\" stroke=\"{stroke}\"/>");
            svg.Append($"<text x=\"{x + 8}\" y=\"{y + 17}\" font-weight=\"600\">{Html.E(label)}</text><text x=\"{x + 8}\" y=\"{y + 34}\" " +
                $"fill=\"#4a5260\">{Html.E(sub)}</text></g>");
        }
        svg.Append("</svg>");

        var details = boxes.Select(bx => new
        {
            layer = bx.Layer,
            summary = summaries.TryGetValue(bx.Layer, out var s) ? s.Summary : "unchanged",
            nodes = diff.Nodes.Where(n => n.Layer == bx.Layer).Select(n =>
                new { change = n.Change.ToString().ToLowerInvariant(), a = n.NameA, b = n.NameB, op = n.OpB.Length > 0 ? n.OpB : n.OpA,
                detail = n.Detail }),
            initializers = diff.Initializers.Where(x => x.Layer == bx.Layer).Select(x =>
                new { a = x.NameA, b = x.NameB, detail = x.Detail, dtype = $"{x.DtypeA} → {x.DtypeB}", bytes = $"{x.BytesA} → {x.BytesB}",
                maxAbsDelta = x.MaxAbsDelta is { } m && double.IsFinite(m) ? m : (double?)null }),
        }).ToList();
        string json = JsonSerializer.Serialize(details).Replace("</", "<\\/", StringComparison.Ordinal);

        var body = new StringBuilder();
        body.Append($"<h1>quantc diff</h1><p class=\"muted\">{Html.E(titleA)} → {Html.E(titleB)}</p>");
        body.Append(diff.IsEmpty ? "<p class=\"ok\">No differences.</p>" :
            $"<p>{diff.Layers.Count} layers changed, {diff.Nodes.Count} node changes, {diff.Initializers.Count} initializer changes. " +
                $"Nodes matched by provenance {diff.MatchedByProvenance}, by name {diff.MatchedByName}, by " +
                $"structure {diff.MatchedByStructure}.</p>");
        body.Append("<p class=\"legend\"><span style=\"background:#fff1d6\">changed</span><span " +
            "style=\"background:#dff3e4\">added</span><span style=\"background:#fde2e1\">removed</span><span " +
            "style=\"background:#f1f3f5\">unchanged</span> Click a layer for its details.</p>");
        body.Append("<div class=\"wrap\"><div class=\"graph\">").Append(svg).Append("</div><div id=\"details\" " +
            "style=\"width:420px\"><span class=\"muted\">No layer selected.</span></div></div>");
        body.Append("<h2>Layers</h2><table><tr><th>layer</th><th>summary</th><th>+nodes</th><th>−nodes</th><th>~nodes</th>" +
            "<th>initializers</th></tr>");
        foreach (var l in diff.Layers)
            body.Append($"<tr><td>{Html.E(l.Layer)}</td><td>{Html.E(l.Summary)}</td><td class=\"num\">{l.NodesAdded}</td><td " +
                $"class=\"num\">{l.NodesRemoved}</td><td class=\"num\">{l.NodesChanged}</td><td " +
                $"class=\"num\">{l.InitializersChanged}</td></tr>");
        body.Append("</table>");

        string script = "const layers = " + json + ";\n" + """
            function esc(s) {
              return String(s == null ? '' : s).replace(/[&<>"]/g, function (c) {
                return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];
              });
            }
            function show(i) {
              const l = layers[i];
              let h = '<h2>' + esc(l.layer) + '</h2><p>' + esc(l.summary) + '</p>';
              if (l.nodes.length) {
                h += '<table><tr><th>change</th><th>node</th><th>op</th><th>detail</th></tr>';
                l.nodes.forEach(function (n) {
                  h += '<tr><td>' + esc(n.change) + '</td><td>' + esc(n.b || n.a) + '</td><td>' + esc(n.op) + '</td><td>' +
                    esc(n.detail) + '</td></tr>';
                });
                h += '</table>';
              }
              if (l.initializers.length) {
                h += '<table><tr><th>initializer</th><th>change</th><th>dtype</th><th>bytes</th><th>max |Δ|</th></tr>';
                l.initializers.forEach(function (x) {
                  h += '<tr><td>' + esc(x.b || x.a) + '</td><td>' + esc(x.detail) + '</td><td>' + esc(x.dtype) + '</td><td>' +
                    esc(x.bytes) + '</td><td>' + (x.maxAbsDelta == null ? '' : x.maxAbsDelta.toPrecision(4)) + '</td></tr>';
                });
                h += '</table>';
              }
              document.getElementById('details').innerHTML = h;
            }
            document.querySelectorAll('.layer').forEach(function (g) { g.addEventListener('click', function () { show(+g.dataset.i); }); });
            const firstChanged = layers.findIndex(function (l) { return l.summary !== 'unchanged'; });
            if (firstChanged >= 0) show(firstChanged);
            """;
        return Html.Page("quantc diff", body.ToString(), script);
    }
}
