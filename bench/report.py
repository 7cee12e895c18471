"""Turns results.json into docs/benchmarks.md and the PNG charts."""

import json
import os
import re
import statistics
import sys

MIB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Distribution 2.8 figures the issue measured on its own 2-core machine.
ISSUE_REF = {
    "herd50_gets": "52", "herd50_wall": "5.2 s", "skopeo50_gets": "47", "skopeo50_wall": "25.5 s",
    "cold_pull": "1.24×", "warm_blob": "382 req/s, p99 558 ms", "nginx_blob": "4,284 req/s, p99 35 ms",
    "head_tag": "185 req/s, 3,766 upstream reqs in 10 s", "nginx_head": "31,855 req/s", "rss": "333 MiB",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def runs_of(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return []
        d = d[p]
    return d if isinstance(d, list) else []


def fs(x, unit="s", digits=2):
    if x is None:
        return "n/a"
    if unit == "ms":
        return f"{x * 1000:.{digits}f} ms"
    return f"{x:.{digits}f} s"


def fnum(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def fmib(kb):
    return "n/a" if not kb else f"{kb / 1024:.1f} MiB"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}×"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**met**" if ok else "**missed**"


def size_label(n):
    if n >= 1024 * MIB:
        return f"{n / 1024 / MIB:.0f} GiB"
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def tables(results):
    """The summary rows, the detail sections and the chart data of one run."""
    sc = results.get("scenarios", {})
    meta = results.get("meta", {})
    rows = []      # summary: (#, line, target, oci, dist, ratio, verdict)
    details = []   # markdown chunks

    # ---- 1: herd, blob
    s1 = sc.get("1")
    herd_chart = {}
    if s1:
        size = size_label(s1["blob_size"])
        det = [f"### 1. Herd, blob: N concurrent cold GETs of one {size} blob",
               "",
               "| N | server | upstream GETs of the blob (each run) | wall (each run) | wall (median) | TTFB per client p50 / p90 / max (median of runs) | server CPU s | peak RSS (max of runs) | other work's CPU s | clients OK |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for n, per in sorted(s1["runs"].items(), key=lambda kv: int(kv[0])):
            agg = {}
            for key in ("oci", "dist", "nginx"):
                rs = per.get(key, [])
                if not rs and key == "nginx":
                    continue
                agg[key] = {
                    "gets": [r["upstream_gets"] for r in rs],
                    "wall": med([r["wall"] for r in rs]),
                    "p50": med([r["ttfb_p50"] for r in rs]),
                    "p90": med([r.get("ttfb_p90") for r in rs]),
                    "max": med([r["ttfb_max"] for r in rs]),
                    "cpu": med([r.get("server_cpu_s") for r in rs]),
                    "ok": [f"{r['ok']}/{r['n']}" for r in rs],
                    "walls": [r["wall"] for r in rs],
                    "hwm": max((r.get("hwm_kb") or 0 for r in rs), default=0),
                    "foreign": [r.get("foreign_cpu_s") for r in rs],
                }
                a = agg[key]
                det.append(f"| {n} | {label(key)} | {', '.join(map(str, a['gets'])) if key != 'nginx' else '—'} | "
                           f"{', '.join(fs(w) for w in a['walls'])} | {fs(a['wall'])} | "
                           f"{fs(a['p50'], 'ms', 0)} / {fs(a['p90'], 'ms', 0)} / {fs(a['max'], 'ms', 0)} | "
                           f"{fnum(a['cpu'], 1) if key != 'nginx' else '—'} | {fmib(a['hwm']) if key != 'nginx' else '—'} | "
                           f"{foreign(a['foreign'])} | {', '.join(a['ok'])} |")
            herd_chart[int(n)] = agg
            o, d = agg["oci"], agg["dist"]
            if o["gets"]:
                ref = f" (issue: dist {ISSUE_REF['herd50_gets']})" if n == "50" else ""
                rows.append(("1", f"herd blob N={n}: upstream GETs (max of runs)",
                             "exactly 1", str(max(o["gets"])), (str(max(d["gets"])) if d["gets"] else "n/a") + ref,
                             ratio(max(o["gets"]), max(d["gets"]) if d["gets"] else None),
                             verdict(max(o["gets"]) == 1)))
                ref = f" (issue: dist {ISSUE_REF['herd50_wall']})" if n == "50" else ""
                rows.append(("1", f"herd blob N={n}: wall time", "≤ 0.5× distribution",
                             fs(o["wall"]), fs(d["wall"]) + ref, ratio(o["wall"], d["wall"]),
                             verdict(o["wall"] is not None and d["wall"] is not None and o["wall"] <= 0.5 * d["wall"])))
                rows.append(("1", f"herd blob N={n}: per-client TTFB p50 / max", "(no target; lead)",
                             f"{fs(o['p50'], 'ms', 0)} / {fs(o['max'], 'ms', 0)}",
                             f"{fs(d['p50'], 'ms', 0)} / {fs(d['max'], 'ms', 0)}",
                             ratio(o["p50"], d["p50"]), lead(o["p50"], d["p50"])))
                ng = agg.get("nginx")
                if ng:
                    rows.append(("1", f"↳ reference N={n}: nginx sendfile, same herd, file already on disk", "",
                                 f"wall {fs(ng['wall'])}, TTFB p50 {fs(ng['p50'], 'ms', 0)}",
                                 f"ociregistry ÷ nginx: {ratio(o['wall'], ng['wall'])}", "", ""))
        details.append("\n".join(det))

    # ---- 2: herd, image
    s2 = sc.get("2")
    if s2:
        det = [f"### 2. Herd, image: {s2['n']} concurrent cold `skopeo copy` of `multilayer` "
               f"({s2['blobs']} blobs, {size_label(s2['bytes'])})", "",
               "| server | upstream blob GETs (each run) | upstream blob HEADs | all upstream requests | wall (each run) | server CPU s | clients' CPU s | other work's CPU s | clients OK |",
               "|---|---|---|---|---|---|---|---|---|"]
        agg = {}
        for key in ("oci", "dist", "oci_warm"):
            rs = s2["runs"].get(key, [])
            if not rs and key == "oci_warm":
                continue
            agg[key] = {"gets": [r["upstream_blob_gets"] for r in rs], "wall": med([r["wall"] for r in rs])}
            det.append(f"| {label(key)} | {', '.join(str(r['upstream_blob_gets']) for r in rs)} | "
                       f"{', '.join(str(r['upstream_blob_heads']) for r in rs)} | "
                       f"{', '.join(str(r['upstream_requests']) for r in rs)} | "
                       f"{', '.join(fs(r['wall']) for r in rs)} | {fnum(med([r.get('server_cpu_s') for r in rs]), 1)} | "
                       f"{fnum(med([r.get('clients_cpu_s') for r in rs]), 1)} | "
                       f"{foreign([r.get('foreign_cpu_s') for r in rs])} | "
                       f"{', '.join(str(r['ok']) + '/' + str(r['n']) for r in rs)} |")
        o, d = agg["oci"], agg["dist"]
        if o["gets"]:
            rows.append(("2", f"herd image N={s2['n']}: upstream blob GETs (max of runs)",
                         f"exactly 1 per blob = {s2['blobs']}", str(max(o["gets"])),
                         (str(max(d["gets"])) if d["gets"] else "n/a") + f" (issue: dist {ISSUE_REF['skopeo50_gets']} for a 2-blob image)",
                         ratio(max(o["gets"]), max(d["gets"]) if d["gets"] else None),
                         verdict(max(o["gets"]) == s2["blobs"])))
            rows.append(("2", f"herd image N={s2['n']}: wall time", "≤ 0.5× distribution", fs(o["wall"]),
                         fs(d["wall"]) + f" (issue: dist {ISSUE_REF['skopeo50_wall']})", ratio(o["wall"], d["wall"]),
                         verdict(o["wall"] is not None and d["wall"] is not None and o["wall"] <= 0.5 * d["wall"])))
            w = agg.get("oci_warm")
            if w:
                rows.append(("2", f"↳ reference: the same {s2['n']} × skopeo, image already cached in ociregistry", "",
                             f"wall {fs(w['wall'])}", f"ociregistry cold ÷ warm: {ratio(o['wall'], w['wall'])}", "", ""))
        details.append("\n".join(det))

    # ---- 3: cold pull
    s3 = sc.get("3")
    if s3:
        t = {k: med([r["time"] for r in s3["runs"].get(k, [])]) for k in ("direct", "oci", "dist")}
        det = ["### 3. Cold single pull of `large` with `skopeo copy` (mirror cache reset before each run)", "",
               "| path | time (each run) | median | ÷ direct | CPU s per pull (median): skopeo / upstream / mirror |",
               "|---|---|---|---|---|"]
        for k in ("direct", "oci", "dist"):
            rs = s3["runs"].get(k, [])
            cpu = " / ".join(fnum(med([r.get(c) for r in rs]), 2) for c in ("client_cpu_s", "upstream_cpu_s", "server_cpu_s"))
            det.append(f"| {label(k)} | {', '.join(fs(r['time']) for r in rs)} | {fs(t[k])} | {ratio(t[k], t['direct'])} | {cpu} |")
        details.append("\n".join(det))
        if t["oci"] is not None:
            rows.append(("3", "cold pull ÷ direct from upstream", "≤ 1.05×", ratio(t["oci"], t["direct"]),
                         ratio(t["dist"], t["direct"]) + f" (issue: {ISSUE_REF['cold_pull']})",
                         ratio(t["oci"], t["dist"]),
                         verdict(t["direct"] and t["oci"] <= 1.05 * t["direct"])))

    # ---- 4: TTFB
    s4 = sc.get("4")
    if s4:
        t = {k: med([r["ttfb"] for r in s4["runs"].get(k, [])]) for k in ("direct", "oci", "dist")}
        tot = {k: med([r["total"] for r in s4["runs"].get(k, [])]) for k in ("direct", "oci", "dist")}
        det = [f"### 4. Time to first byte of a cold {size_label(s4['blob_size'])} blob (curl)", "",
               "| path | TTFB (each run) | median TTFB | whole blob (median) |", "|---|---|---|---|"]
        for k in ("direct", "oci", "dist"):
            det.append(f"| {label(k)} | {', '.join(fs(r['ttfb'], 'ms', 1) for r in s4['runs'].get(k, []))} | "
                       f"{fs(t[k], 'ms', 1)} | {fs(tot[k])} |")
        details.append("\n".join(det))
        if t["oci"] is not None:
            rows.append(("4", f"cold TTFB, {size_label(s4['blob_size'])} blob (upstream: {fs(t['direct'], 'ms', 1)})",
                         "≤ upstream + 20 ms", fs(t["oci"], "ms", 1), fs(t["dist"], "ms", 1),
                         ratio(t["oci"], t["dist"]),
                         verdict(t["direct"] is not None and t["oci"] <= t["direct"] + 0.020)))
            rows.append(("4", f"cold {size_label(s4['blob_size'])} blob, whole transfer to one client "
                              f"(upstream direct: {fs(tot['direct'])})", "(no target; lead)",
                         fs(tot["oci"]), fs(tot["dist"]), ratio(tot["oci"], tot["dist"]), lead(tot["oci"], tot["dist"])))

    # ---- 5 and 6: warm
    warm_chart = {}
    s5 = sc.get("5")
    if s5:
        agg = {k: warm_agg(s5["runs"].get(k, [])) for k in ("oci", "dist", "nginx")}
        warm_chart["blob GET\n(1 MiB)"] = agg
        det = [f"### 5. Warm blob GET: {size_label(s5['blob_size'])}, {s5['conns']} connections, {s5['dur']} s (wrk)", "",
               warm_header()] + [warm_line(k, agg[k], s5["runs"].get(k, [])) for k in ("oci", "dist", "nginx")]
        details.append("\n".join(det))
        o, d, n = agg["oci"], agg["dist"], agg["nginx"]
        if o["rps"] is not None:
            rows.append(("5", "warm 1 MiB blob: req/s (p50 / p99)", "≥ 0.9× nginx sendfile (issue #7: 0.7×)",
                         f"{fnum(o['rps'])} ({fs(o['p50'], 'ms', 1)} / {fs(o['p99'], 'ms', 1)})",
                         f"{fnum(d['rps'])} ({fs(d['p50'], 'ms', 1)} / {fs(d['p99'], 'ms', 1)})",
                         ratio(o["rps"], d["rps"]),
                         verdict(n["rps"] and o["rps"] >= 0.9 * n["rps"]) +
                         f" ({ratio(o['rps'], n['rps'])} nginx)"))
            rows.append(("5", "↳ reference: nginx sendfile, same file", "", f"{fnum(n['rps'])} req/s ({fs(n['p50'], 'ms', 1)} / {fs(n['p99'], 'ms', 1)})",
                         f"(issue: {ISSUE_REF['nginx_blob']}; dist {ISSUE_REF['warm_blob']})", "", ""))
        large = s5.get("runs_large")
        if large:
            agg = {k: warm_agg(large.get(k, [])) for k in ("oci", "dist", "nginx")}
            gbps = lambda a: a["rps"] * s5["large_size"] / 1e9 if a["rps"] is not None else None  # noqa: E731
            details.append("\n".join(
                [f"Warm blob GET: {size_label(s5['large_size'])}, {s5['conns']} connections, {s5['dur']} s (wrk):", "",
                 warm_header()] + [warm_line(k, agg[k], large.get(k, [])) for k in ("oci", "dist", "nginx")]))
            o, d, n = agg["oci"], agg["dist"], agg["nginx"]
            if o["rps"] is not None:
                rows.append(("5", f"warm {size_label(s5['large_size'])} blob: GB/s", "≥ 0.9× nginx sendfile",
                             f"{fnum(gbps(o), 2)}", f"{fnum(gbps(d), 2)}", ratio(o["rps"], d["rps"]),
                             verdict(n["rps"] and o["rps"] >= 0.9 * n["rps"]) +
                             f" ({ratio(o['rps'], n['rps'])} nginx: {fnum(gbps(n), 2)} GB/s)"))
    s6 = sc.get("6")
    if s6:
        det = [f"### 6. Warm manifest HEAD, {s6['conns']} connections, {s6['dur']} s (hey); nginx: HEAD of a static "
               f"file of the manifest's size ({s6['manifest_size']} bytes)", ""]
        for what in ("tag", "digest"):
            runs = s6["runs"].get(what, {})
            agg = {k: warm_agg(runs.get(k, [])) for k in ("oci", "dist", "nginx")}
            warm_chart[f"HEAD manifest\nby {what}"] = agg
            det += [f"By {what}:", "", warm_header()] + [warm_line(k, agg[k], runs.get(k, [])) for k in ("oci", "dist", "nginx")] + [""]
            o, d, n = agg["oci"], agg["dist"], agg["nginx"]
            if o["rps"] is not None:
                ok = n["rps"] and o["rps"] >= 0.5 * n["rps"] and o["up_max"] == 0
                ref = f" (issue: dist {ISSUE_REF['head_tag']})" if what == "tag" else ""
                rows.append(("6", f"HEAD by {what}: req/s (p99), upstream reqs", "≥ 0.5× nginx HEAD, 0 upstream",
                             f"{fnum(o['rps'])} ({fs(o['p99'], 'ms', 1)}), {o['up_max']}",
                             f"{fnum(d['rps'])} ({fs(d['p99'], 'ms', 1)}), {d['up_max']}{ref}",
                             ratio(o["rps"], d["rps"]),
                             verdict(ok) + f" ({ratio(o['rps'], n['rps'])} nginx)"))
        nrs = warm_agg(s6["runs"].get("tag", {}).get("nginx", []))
        if nrs["rps"] is not None:
            rows.append(("6", "↳ reference: nginx HEAD, static file", "", f"{fnum(nrs['rps'])} req/s ({fs(nrs['p99'], 'ms', 1)})",
                         f"(issue: {ISSUE_REF['nginx_head']})", "", ""))
        details.append("\n".join(det))

    # ---- 7: memory
    peaks = results.get("peak_rss_kb", {})
    s7 = sc.get("7")
    if peaks:
        det = ["### 7. Memory: peak RSS (VmHWM) of each server, per scenario", "",
               "| server | " + " | ".join(f"scenario {k}" for k in scen_keys(peaks)) + " | overall |",
               "|---|" + "---|" * (len(scen_keys(peaks)) + 1)]
        for key in ("oci", "dist"):
            p = peaks.get(key, {})
            det.append(f"| {label(key)} | " + " | ".join(fmib(p.get(k)) for k in scen_keys(peaks)) +
                       f" | {fmib(max(p.values()) if p else None)} |")
        det.append("")
        det.append("Scenario 5 covers 5 and 6 (both servers stay up through the warm runs); "
                   "scenario 8 is ociregistry's start-up with the generated cache.")
        if s7:
            det += ["", f"{s7['n']} clients downloading one cold blob at once (a fresh instance for each size):", "",
                    "| blob | server | idle RSS | RSS max (sampled every 0.1 s) | VmHWM | wall | upstream GETs | server CPU s | clients OK |",
                    "|---|---|---|---|---|---|---|---|---|"]
            for image, size in s7.get("sizes", {}).items():
                for key in ("oci", "dist"):
                    for r in s7["runs"].get(image, {}).get(key, []):
                        det.append(f"| {size_label(size)} | {label(key)} | {fmib(r.get('idle_rss_kb'))} | {fmib(r.get('rss_max_kb'))} | "
                                   f"{fmib(r.get('hwm_kb'))} | {fs(r['wall'])} | {r['upstream_gets']} | "
                                   f"{fnum(r.get('server_cpu_s'), 1)} | {r['ok']}/{r['n']} |")
        details.append("\n".join(det))
        po = max(peaks.get("oci", {}).values(), default=None)
        pd = max(peaks.get("dist", {}).values(), default=None)
        if po:
            rows.append(("7", "peak RSS across all scenarios", "≤ 64 MiB", fmib(po),
                         fmib(pd) + f" (issue: {ISSUE_REF['rss']})", ratio(po, pd), verdict(po <= 64 * 1024)))
        if s7 and s7.get("sizes"):
            def rss(image, key):
                rs = s7["runs"].get(image, {}).get(key, [])
                return max((r.get("hwm_kb") or 0 for r in rs), default=None) or None
            small, big = rss("large", "oci"), rss("huge", "oci")
            flat = big is not None and small is not None and big <= 64 * 1024 and big <= 1.25 * small
            sizes = s7["sizes"]
            rows.append(("7", f"peak RSS while {s7['n']} clients download a cold {size_label(sizes['huge'])} blob "
                              f"(same with {size_label(sizes['large'])})",
                         "≤ 64 MiB and flat in blob size (≤ 1.25× the smaller blob's)",
                         f"{fmib(big)} ({fmib(small)})", f"{fmib(rss('huge', 'dist'))} ({fmib(rss('large', 'dist'))})",
                         ratio(big, rss("huge", "dist")), verdict(flat)))

    # ---- 8: start-up
    s8 = sc.get("8")
    if s8:
        t = {k: med([r["startup"] for r in s8["runs"].get(k, [])]) for k in ("empty", "warm", "evicted")}
        det = [f"### 8. ociregistry start-up (exec → `listening` line) with {s8['manifests']:,} manifests, "
               f"{s8['tags']:,} tags and {s8['blobs']:,} blobs in its cache", "",
               "| cache | each run | median |", "|---|---|---|"]
        names = {"empty": "empty cache", "warm": "generated cache, page cache warm",
                 "evicted": "generated cache, its files' pages evicted (fadvise DONTNEED) first"}
        for k in ("empty", "warm", "evicted"):
            det.append(f"| {names[k]} | {', '.join(fs(r['startup'], 'ms', 0) for r in s8['runs'].get(k, []))} | {fs(t[k], 'ms', 0)} |")
        details.append("\n".join(det))
        if t["warm"] is not None:
            rows.append(("8", f"start-up with {s8['manifests']:,} manifests, {s8['blobs']:,} blobs (evicted: {fs(t['evicted'], 'ms', 0)})",
                         "≤ 1 s", fs(t["warm"], "ms", 0), "—", "—", verdict(t["warm"] <= 1.0)))

    # ---- 9: object storage
    s9 = sc.get("9")
    if s9 and s9.get("runs"):
        runs = s9["runs"]
        herd = runs.get("herd", {})
        names = {"oci": "filesystem", "oci-s3": "S3 (moto), 1 replica", "oci-s3x3": "S3 (moto), 3 replicas + haproxy"}
        det = [f"### 9. Object storage: the bucket backend beside the filesystem one", "",
               f"Cold herd: {s9['n']} clients on one {size_label(s9['blob_size'])} blob, caches and bucket empty.", "",
               "| backend | wall (median) | upstream GETs | peak RSS |", "|---|---|---|---|"]
        for key in ("oci", "oci-s3", "oci-s3x3"):
            rs = herd.get(key, [])
            if not rs:
                continue
            gets = sorted({r["upstream_gets"] for r in rs})
            rss = max((r.get("rss_max_kb") or 0 for r in rs), default=0) if key != "oci-s3x3" else None
            det.append(f"| {names[key]} | {fs(med([r['wall'] for r in rs]))} | {', '.join(map(str, gets))} | "
                       f"{fmib(rss) if rss else '—'} |")
        warm, head = runs.get("warm", {}), runs.get("head", {})
        rps = lambda rs: med([r["rps"] for r in rs])  # noqa: E731
        det += ["", f"Warm, {s9['conns']} connections, {s9['dur']} s each:", "",
                "| backend | 1 MiB blob GET | HEAD by tag |", "|---|---|---|"]
        for key in ("oci", "oci-s3"):
            if warm.get(key):
                det.append(f"| {names[key]} | {fnum(rps(warm[key]))} req/s | {fnum(rps(head.get(key, [])))} req/s |")
        details.append("\n".join(det))
        fs_rps, s3_rps = rps(warm.get("oci", [])), rps(warm.get("oci-s3", []))
        if fs_rps and s3_rps:
            rows.append(("9", "warm 1 MiB blob GET, S3 backend ÷ filesystem backend",
                         "≥ 0.9× (within 10 %)", f"{fnum(s3_rps)} req/s (fs {fnum(fs_rps)})", "—",
                         ratio(s3_rps, fs_rps), verdict(s3_rps >= 0.9 * fs_rps)))
        x3 = herd.get("oci-s3x3", [])
        if x3:
            worst = max(r["upstream_gets"] for r in x3)
            rows.append(("9", f"cold herd of {s9['n']} over 3 replicas on one bucket: upstream GETs of the blob",
                         "≤ 3 (one per replica at most)", str(worst), "—", "—", verdict(worst <= 3)))

    # ---- 10: an upstream capping every connection
    s10 = sc.get("10")
    if s10 and s10.get("runs"):
        runs = s10["runs"]
        t = {k: med([r["total"] for r in runs.get(k, [])]) for k in ("direct", "oci", "oci_parallel")}
        det = [f"### 10. Cold {size_label(s10['blob_size'])} blob from an upstream capped at {s10['rate'][:-1]} MiB/s "
               "per connection (nginx `limit_rate` in front of the registry)", "",
               "| path | time (each run) | median | ÷ direct | upstream bytes ÷ blob (each run) |",
               "|---|---|---|---|---|"]
        for k in ("direct", "oci", "oci_parallel"):
            rs = runs.get(k, [])
            det.append(f"| {label(k)} | {', '.join(fs(r['total']) for r in rs)} | {fs(t[k])} | "
                       f"{ratio(t[k], t['direct'])} | "
                       f"{', '.join(fnum(r['upstream_bytes'] / s10['blob_size'], 2) for r in rs)} |")
        details.append("\n".join(det))
        if t["oci_parallel"] is not None and t["direct"]:
            worst = max(r["upstream_bytes"] for r in runs.get("oci_parallel", [])) / s10["blob_size"]
            rows.append(("10", "cold blob from a per-connection-capped upstream, parallelFetch ÷ direct",
                         "≤ 0.3×", ratio(t["oci_parallel"], t["direct"]),
                         f"one connection: {ratio(t['oci'], t['direct'])}", "—",
                         verdict(t["oci_parallel"] <= 0.3 * t["direct"])))
            rows.append(("10", "↳ upstream bytes fetched ÷ blob size (worst run)", "1.0×",
                         f"{worst:.2f}×", "—", "—", verdict(worst <= 1.0)))

    # ---- 11: a client fetching in parallel ranges
    s11 = sc.get("11")
    if s11 and s11.get("runs"):
        runs = s11["runs"]
        t = {k: med([r["wall"] for r in runs.get(k, [])]) for k in ("full", "ranges")}
        det = [f"### 11. Cold {size_label(s11['blob_size'])} blob through ociregistry: one GET, or "
               f"{s11['parts']} concurrent `Range` requests covering it (as containerd 2.1+ fetches)", "",
               "| client | wall (each run) | median | upstream GETs (each run) |", "|---|---|---|---|"]
        for k, name in (("full", "one GET"), ("ranges", f"{s11['parts']} ranges at once")):
            rs = runs.get(k, [])
            det.append(f"| {name} | {', '.join(fs(r['wall']) for r in rs)} | {fs(t[k])} | "
                       f"{', '.join(str(r['upstream_gets']) for r in rs)} |")
        details.append("\n".join(det))
        if t["ranges"] is not None and t["full"]:
            gets = max(r["upstream_gets"] for r in runs.get("ranges", []))
            rows.append(("11", f"cold blob as {s11['parts']} concurrent client ranges ÷ one GET (upstream GETs: {gets})",
                         "≤ 1.1×, 1 upstream fetch", ratio(t["ranges"], t["full"]), "—", "—",
                         verdict(t["ranges"] <= 1.1 * t["full"] and gets == 1)))

    # ---- 12: a thousand clients on one cold image
    s12 = sc.get("12")
    if s12 and s12.get("runs"):
        runs = s12["runs"]
        det = [f"### 12. {s12['n']:,} clients pulling one uncached image at once ({s12['blobs']} blobs, "
               f"{size_label(s12['image_size'])}; `bench/swarm.py`: one asyncio process, one keep-alive connection "
               "per client, manifest then every blob, each body hashed against its digest)", "",
               "| server | clients OK (each run) | wall (each run) | TTFB p50 / p90 / p99 / max (median of runs) | "
               "upstream blob GETs | peak RSS | peak threads / descriptors | server CPU s | swarm CPU s |",
               "|---|---|---|---|---|---|---|---|---|"]
        agg = {}
        for key in ("oci", "nginx"):
            rs = runs.get(key, [])
            if not rs:
                continue
            a = agg[key] = {q: med([r[q] for r in rs]) for q in ("wall", "ttfb_p50", "ttfb_p90", "ttfb_p99", "ttfb_max",
                                                                  "server_cpu_s", "client_cpu_s")}
            a["ok"] = min(r["ok"] for r in rs) == s12["n"] and all(r["bad"] == 0 for r in rs)
            a["gets"] = max((r.get("upstream_blob_gets", 0) for r in rs), default=0)
            a["rss"] = max((r.get("rss_max_kb") or 0 for r in rs), default=0)
            a["threads"] = max((r.get("threads_max") or 0 for r in rs), default=0)
            a["fds"] = max((r.get("fds_max") or 0 for r in rs), default=0)
            oci = key == "oci"
            oks = ", ".join("%d/%d%s" % (r["ok"], r["n"], " (%d bad)" % r["bad"] if r["bad"] else "") for r in rs)
            ttfb = " / ".join(fs(a[q], "ms", 0) for q in ("ttfb_p50", "ttfb_p90", "ttfb_p99", "ttfb_max"))
            gets = ", ".join(str(r["upstream_blob_gets"]) for r in rs) if oci else "—"
            peaks = "%d / %d" % (a["threads"], a["fds"]) if oci else "—"
            det.append(f"| {label(key)}{' (cold)' if oci else ' (warm files)'} | {oks} | "
                       f"{', '.join(fs(r['wall']) for r in rs)} | {ttfb} | {gets} | "
                       f"{fmib(a['rss']) if oci else '—'} | {peaks} | "
                       f"{fnum(a['server_cpu_s'], 1)} | {fnum(a['client_cpu_s'], 1)} |")
        details.append("\n".join(det))
        o, n = agg.get("oci"), agg.get("nginx")
        if o:
            rows.append(("12", f"{s12['n']:,} clients, one cold image: every client verified, upstream GETs per blob",
                         "all verified, 1 per blob", f"{'all' if o['ok'] else 'NOT all'}, {o['gets']} for {s12['blobs']}",
                         "—", "—", verdict(o["ok"] and o["gets"] <= s12["blobs"])))
            if n:
                rows.append(("12", "↳ wall, cold through ociregistry ÷ nginx serving the files warm", "≤ 1.3×",
                             f"{fs(o['wall'])} ÷ {fs(n['wall'])}", "—", ratio(o["wall"], n["wall"]),
                             verdict(o["wall"] <= 1.3 * n["wall"])))
            rows.append(("12", "↳ per-request time to first byte p99 (nginx warm)", "≤ 1 s",
                         f"{fs(o['ttfb_p99'], 'ms', 0)}", "—", f"nginx: {fs(n['ttfb_p99'], 'ms', 0) if n else 'n/a'}",
                         verdict(o["ttfb_p99"] is not None and o["ttfb_p99"] <= 1.0)))
            rows.append(("12", "↳ peak RSS; peak threads and descriptors", "≤ 128 MiB; bounded",
                         f"{fmib(o['rss'])}; {o['threads']} threads, {o['fds']} fds", "—", "—",
                         verdict(o["rss"] <= 128 * 1024)))

    return rows, details, herd_chart, warm_chart


def row_key(row):
    """What identifies a summary line across runs: its scenario and its
    wording without the figures in brackets."""
    return row[0], re.sub(r"\s*\([^)]*\)", "", row[1]).strip()


def load_previous(paths):
    """The earlier runs' results, merged (a later file's scenario wins)."""
    merged = {"scenarios": {}, "peak_rss_kb": {}}
    for path in paths:
        with open(os.path.join(REPO, path)) as f:
            r = json.load(f)
        merged["scenarios"].update(r.get("scenarios", {}))
        for key, per in r.get("peak_rss_kb", {}).items():
            merged["peak_rss_kb"].setdefault(key, {}).update(per)
    return merged


def write(results, docs, smoke=False):
    os.makedirs(docs, exist_ok=True)
    sc = results.get("scenarios", {})
    rows, details, herd_chart, warm_chart = tables(results)
    previous = results.get("previous_files") or []
    if previous:
        before = {row_key(r): r[3] for r in tables(load_previous(previous))[0]}
        rows = [r[:4] + (before.get(row_key(r), "—"),) + r[4:] for r in rows]
    charts = []
    try:
        charts = make_charts(herd_chart, warm_chart, docs, sc)
    except ImportError as e:
        print(f"charts skipped: {e}", file=sys.stderr)
        if not smoke:
            raise

    md = render(results.get("meta", {}), rows, details, charts, results, smoke)
    path = os.path.join(docs, "benchmarks.md")
    with open(path, "w") as f:
        f.write(md)
    return path


def foreign(xs):
    xs = [x for x in xs if x is not None]
    return ", ".join(f"{x:.1f}" for x in xs) if xs else "n/a"


def scen_keys(peaks):
    """The scenarios any server's peak RSS was sampled in, in numeric order."""
    keys = set()
    for p in peaks.values():
        keys.update(p.keys())
    keys.discard("idle")
    return sorted(keys, key=lambda k: (len(k), k))


def label(key):
    return {"oci": "ociregistry", "dist": "distribution proxy", "nginx": "nginx sendfile",
            "direct": "direct from upstream", "oci_warm": "ociregistry, image already cached",
            "oci-s3": "ociregistry on S3",
            "oci_parallel": "ociregistry, parallelFetch (8 connections)"}.get(key, key)


def lead(o, d):
    if o is None or d is None:
        return "n/a"
    return "leads" if o < d else "trails"


def warm_agg(rs):
    return {"rps": med([r["rps"] for r in rs]), "p50": med([r["p50"] for r in rs]), "p99": med([r["p99"] for r in rs]),
            "up_max": max((r.get("upstream_requests", 0) for r in rs), default=None),
            "errors": sum(r.get("errors", 0) for r in rs), "cpu": med([r.get("server_cpu_s") for r in rs])}


def warm_header():
    return ("| server | req/s (each run) | req/s median | p50 | p99 | errors | upstream reqs during runs | server CPU s per run | other work's CPU s |\n"
            "|---|---|---|---|---|---|---|---|---|")


def warm_line(key, a, rs):
    return (f"| {label(key)} | {', '.join(fnum(r['rps']) for r in rs)} | {fnum(a['rps'])} | {fs(a['p50'], 'ms', 2)} | "
            f"{fs(a['p99'], 'ms', 2)} | {a['errors']} | {', '.join(str(r.get('upstream_requests', 0)) for r in rs)} | "
            f"{fnum(a['cpu'], 1) if key != 'nginx' else '—'} | {foreign([r.get('foreign_cpu_s') for r in rs])} |")


def make_charts(herd, warm, docs, sc):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"oci": "#1f77b4", "dist": "#d62728", "nginx": "#7f7f7f"}
    made = []
    if herd:
        ns = sorted(herd)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for key in ("oci", "dist"):
            gets = [max(herd[n][key]["gets"]) if herd[n][key]["gets"] else None for n in ns]
            walls = [herd[n][key]["wall"] for n in ns]
            ax1.plot(ns, gets, "o-", color=colors[key], label=label(key))
            ax2.plot(ns, walls, "o-", color=colors[key], label=label(key))
            for x, y in zip(ns, gets):
                if y is not None:
                    ax1.annotate(str(y), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax1.plot(ns, [1] * len(ns), "--", color="#2ca02c", label="target: 1")
        dist_walls = [herd[n]["dist"]["wall"] for n in ns]
        if all(w is not None for w in dist_walls):
            ax2.plot(ns, [0.5 * w for w in dist_walls], ":", color=colors["dist"], alpha=0.7,
                     label="target: 0.5× distribution")
        if all("nginx" in herd[n] for n in ns):
            ax2.plot(ns, [herd[n]["nginx"]["wall"] for n in ns], "s--", color=colors["nginx"],
                     label="nginx sendfile (file already cached)")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xticks(ns)
        ax1.set_xticklabels([str(n) for n in ns])
        ax1.set_xlabel("concurrent cold clients (N)")
        ax1.set_ylabel("upstream GETs of the blob")
        size = size_label(sc["1"]["blob_size"])
        ax1.set_title(f"Herd on one {size} blob: upstream fetches")
        ax1.legend(fontsize=8)
        ax2.set_xscale("log")
        ax2.set_xticks(ns)
        ax2.set_xticklabels([str(n) for n in ns])
        ax2.set_xlabel("concurrent cold clients (N)")
        ax2.set_ylabel("wall time, s (median)")
        ax2.set_title("Herd: wall time until every client has the blob")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(docs, "bench-herd.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(("Herd: upstream fetches and wall time vs N", os.path.basename(p)))
    if warm:
        groups = list(warm)
        fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 4))
        if len(groups) == 1:
            axes = [axes]
        for ax, g in zip(axes, groups):
            keys = ["oci", "dist", "nginx"]
            vals = [warm[g][k]["rps"] or 0 for k in keys]
            bars = ax.bar([label(k).replace(" ", "\n", 1) for k in keys], vals, color=[colors[k] for k in keys])
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=8)
            ax.set_title(g.replace("\n", " "))
            ax.set_ylabel("requests/s (median)")
            ax.tick_params(axis="x", labelsize=8)
        fig.suptitle("Warm (cached) throughput, 64 connections")
        fig.tight_layout()
        p = os.path.join(docs, "bench-warm.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(("Warm throughput", os.path.basename(p)))
    s10 = sc.get("10")
    if s10 and s10.get("runs"):
        keys = [k for k in ("direct", "oci", "oci_parallel") if s10["runs"].get(k)]
        times = [med([r["total"] for r in s10["runs"][k]]) for k in keys]
        fig, ax = plt.subplots(figsize=(9, 3.2))
        bars = ax.barh([label(k) for k in keys], times, color=["#7f7f7f", "#aec7e8", "#1f77b4"][:len(keys)])
        for b, v in zip(bars, times):
            ax.annotate(f"{v:.1f} s", (v, b.get_y() + b.get_height() / 2), textcoords="offset points",
                        xytext=(4, 0), va="center", fontsize=8)
        if "direct" in keys:
            ax.axvline(0.3 * times[0], linestyle="--", color="#2ca02c", label="target: 0.3× direct")
            ax.legend(fontsize=8, loc="lower right")
        ax.invert_yaxis()
        ax.set_xlim(0, max(times) * 1.15)
        ax.set_xlabel("time to receive the whole blob, s (median)")
        ax.set_title(f"Cold {size_label(s10['blob_size'])} blob, upstream at {s10['rate'][:-1]} MiB/s per connection")
        fig.tight_layout()
        p = os.path.join(docs, "bench-throttled.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(("Cold blob from a per-connection-capped upstream", os.path.basename(p)))
    return made


def render(meta, rows, details, charts, results, smoke):
    out = []
    out.append("# Benchmarks: ociregistry vs CNCF Distribution in proxy mode")
    out.append("")
    if smoke:
        out.append("**Smoke run** (tiny sizes, N = 5, short load runs, 1 repetition): the figures only show that "
                   "every scenario runs; they mean nothing.")
        out.append("")
    out.append("Generated by `bench/run` (see [bench/README.md](../bench/README.md)) on "
               f"{meta.get('date', 'n/a')}. One real upstream (`docker-registry`, plain HTTP on 127.0.0.1) holds "
               "generated images; **ociregistry** and **distribution in proxy mode** (`proxy.remoteurl` = the same "
               "upstream) take turns on each scenario, the order alternating between repetitions, each mirror's "
               "cache wiped (stop, delete, start) before every cold run. Upstream requests are counted from the "
               "upstream's own access log. Figures are medians over "
               f"{meta.get('reps', '?')} repetitions ({meta.get('pull_reps', meta.get('reps', '?'))} for the cold pull, "
               f"{meta.get('huge_reps', '?')} for the cold 1 GiB TTFB, 1 for the "
               "64-client 1 GiB download); ratios are ociregistry ÷ distribution. Clients, servers and the upstream "
               "share the same cores. Herds start together: every `curl` is already running, blocked reading its "
               "URL from stdin, when the driver releases them all (`skopeo` processes wait on one FIFO). Before "
               "each measured run the driver waits (at most 90 s) until other processes on the machine use less than "
               "a quarter of a core" + (f" (it waited {results['quiet_wait_s']:.0f} s in all)" if results.get("quiet_wait_s") else "") +
               "; the CPU they still used during each run is shown in the details.")
    out.append("")
    out.append("## Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    for k, name in (("cpu", "CPU"), ("cores", "cores"), ("ram_gib", "RAM (GiB)"), ("kernel", "kernel"), ("os", "OS"),
                    ("ociregistry", "ociregistry"), ("distribution", "distribution"), ("nginx", "nginx"),
                    ("skopeo", "skopeo"), ("curl", "curl"), ("wrk", "wrk"), ("hey", "hey"), ("python", "python"),
                    ("scratch", "skopeo copies written to")):
        out.append(f"| {name} | {str(meta.get(k, 'n/a')).replace('|', '/')} |")
    out.append("")
    out.append("## Results against the targets")
    out.append("")
    out.append("Each line names the target it is compared against (issue #7 for scenarios 1-8, #12 for 9, #15 for "
               "10-12 and the raised warm target of 5); \"issue:\" figures are the ones issue #7 measured for "
               "distribution 2.8 on its own 2-core machine, for reference. A ratio below 1 is better for times, GET counts "
               "and memory, above 1 for req/s.")
    previous = results.get("previous_files") or []
    if previous:
        out.append("")
        out.append("\"previous run\" is ociregistry's figure on the same line in the committed results of the run "
                   "before this one: " + ", ".join(f"`{p}`" for p in previous) + " (a later file's scenarios replace "
                   "an earlier one's; — where that run had no such line).")
    out.append("")
    if previous:
        out.append("| # | line | target | ociregistry | previous run | distribution | ociregistry ÷ distribution | verdict |")
        out.append("|---|---|---|---|---|---|---|---|")
    else:
        out.append("| # | line | target | ociregistry | distribution | ociregistry ÷ distribution | verdict |")
        out.append("|---|---|---|---|---|---|---|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    out.append("")
    errors = results.get("errors", {})
    if errors:
        out.append("**Scenarios that failed to run:** " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        out.append("")
    for title, png in charts:
        out.append(f"![{title}]({png})")
        out.append("")
    analysis = os.path.join(HERE, "analysis.md")
    if not smoke and os.path.exists(analysis):
        with open(analysis) as f:
            out.append(f.read().rstrip())
            out.append("")
    out.append("## Details")
    out.append("")
    for d in details:
        out.append(d)
        out.append("")
    durs = results.get("durations", {})
    if durs:
        fc = results.get("foreign_cpu_s", {})
        out.append("Scenario run times, and in brackets the CPU seconds other work on the machine (processes outside "
                   "the benchmark, e.g. compilers) used meanwhile: " +
                   ", ".join(f"{k}: {v} s ({fc.get(k, 'n/a')})" for k, v in durs.items()) + ". "
                   "\"other work's CPU s\" columns give the same per run; a run with a large figure competed for the 2 cores.")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    # Re-render from a results.json: python3 bench/report.py RESULTS.json DOCS_DIR
    with open(sys.argv[1]) as f:
        res = json.load(f)
    print(write(res, sys.argv[2], smoke=res.get("meta", {}).get("smoke", False)))
