"""The Markdown report of bench/run.py: the targets first (each measured value next to its
target), then the tables they come from. docs/performance.md explains every row."""

MB = 2**20


def f(x, spec=".1f", suffix=""):
    return "—" if x is None else format(x, spec) + suffix


def ratio(num, den):
    return num / den if num is not None and den else None


def ms(rec):
    return rec["median_ms"] if rec else None


def met(ok, plausible=True):
    """plausible False: the value cannot be right (faster than its bound, a negative overhead),
    so the machine's load changed mid-measurement."""
    if not plausible:
        return "noisy: rerun"
    return "—" if ok is None else ("met" if ok else "**not met**")


def rss_mb(rec):
    return rec["peak_rss_kb"] / 1024 if rec and rec.get("peak_rss_kb") else None


def coretype(m):
    """The header's note when the run set OPENBLAS_CORETYPE (bench/run.py choose_coretype)."""
    return f" — {m['coretype_note']}" if m.get("coretype_note") else ""


def memory_budget(rec, weight_bytes):
    """Weights + cached bytes + one layer's activations + the logits the caller asked for. The
    weights: the bytes the loaded model holds (its processed copies and the mapped tensors it
    reads in place: model_weight_bytes of bench_forward), else the file's size."""
    weight_bytes = (rec or {}).get("model_weight_bytes") or weight_bytes
    if not rec or not weight_bytes:
        return None
    return (weight_bytes + rec["cache_bytes"] + rec["layer_bytes"] + rec["logits_bytes"]) / MB


MEMORY_SLACK = 1.10  # the process itself (libc, OpenBLAS buffers, the token array): 10% allowed


def render(a, m, gemm, fwd, load, comp):
    shapes = sorted({k[2] for k in fwd if len(k) == 3}, key=lambda s: (s[0] * s[1], s))
    get = lambda who, mode, s: fwd.get((who, mode, s))
    weight_bytes = (load.get(("circuits", True, "warm")) or {}).get("weight_bytes")
    out, targets = [], []

    def target(name, value, goal, ok, plausible=True):
        targets.append(f"| {name} | {value} | {goal} | {met(ok, plausible)} |")

    # forward
    rows = []
    for s in shapes:
        c, t, tl = get("circuits", "plain", s), get("torch", "plain", s), get("tl", "plain", s)
        g = gemm["forward"].get(s, {})
        frac = ratio(g.get("limit_ms"), ms(c))
        vs_torch = ratio(ms(t), ms(c))
        rows.append(f"| {s[0]}×{s[1]} | {f(ms(c))} | {f(c and c['tokens_per_s'], '.0f')} | {f(ms(t))} | {f(ms(tl))} | "
                    f"{f(vs_torch, '.2f', '×')} | {f(ratio(ms(tl), ms(c)), '.2f', '×')} | {f(g.get('gflop'), '.1f')} | "
                    f"{f(g.get('limit_ms'))} | {f(frac and 100 * frac, '.0f', '%')} | {f(g.get('peak_ms'))} | "
                    f"{f(rss_mb(c), '.0f')} / {f(rss_mb(t), '.0f')} / {f(rss_mb(tl), '.0f')} |")
        if s == (1, 128):
            target("forward throughput vs PyTorch eager, B=1 T=128", f(vs_torch, ".2f", "×"), "≥ 1.4×",
                   vs_torch and vs_torch >= 1.4)
        if s == (1, 1024):
            target("forward throughput vs PyTorch eager, B=1 T=1024", f(vs_torch, ".2f", "×"), "≥ 1.75×",
                   vs_torch and vs_torch >= 1.75)
        if s[1] >= 512:
            target(f"forward, fraction of the GEMM-bound limit, B={s[0]} T={s[1]}", f(frac and 100 * frac, ".0f", "%"),
                   "≥ 85%", frac and frac >= 0.85, not frac or frac <= 1.0)
    autograd = next((v for k, v in fwd.items() if k[:2] == ("tl", "autograd")), None)
    out += ["### Forward (logits for every position)", "",
            "| B×T | libcircuits ms | tokens/s | PyTorch eager ms | TL ms | speed-up vs PyTorch | vs TL | GEMM GFLOP "
            "| GEMM-bound limit ms | % of limit reached | GFLOP at sgemm peak, ms | peak RSS MB (lc / torch / TL) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows
    if autograd:
        out += ["", f"TransformerLens with autograd on (its default, no inference_mode) at B=1 T=128: "
                    f"{f(ms(autograd))} ms, peak RSS {f(rss_mb(autograd), '.0f')} MB."]

    # hooks (issue 19's goals: <= 5% with a callback everywhere, <= 2% everywhere but the two
    # attention squares, whose callback keeps [B, H, T, T] in memory)
    rows = []
    for s in shapes:
        c0, c, cn, t0, t = (get("circuits", "plain", s), get("circuits", "hooks", s),
                            get("circuits", "hooks_no_attn", s), get("tl", "plain", s), get("tl", "hooks", s))
        over = ratio(ms(c), ms(c0))
        over_n = ratio(ms(cn), ms(c0))
        tover = ratio(ms(t), ms(t0))
        rows.append(f"| {s[0]}×{s[1]} | {f(c and c.get('registered'), 'd')} / {f(c and c['hook_calls'], 'd')} | "
                    f"{f(t and t.get('registered'), 'd')} / {f(t and t['hook_calls'], 'd')} | {f(ms(c))} | "
                    f"{f(over and 100 * (over - 1), '+.1f', '%')} | {f(ms(cn))} | "
                    f"{f(over_n and 100 * (over_n - 1), '+.1f', '%')} | {f(ms(t))} | "
                    f"{f(tover and 100 * (tover - 1), '+.1f', '%')} | {f(ratio(ms(t), ms(c)), '.2f', '×')} |")
        target(f"no-op hooks at every point, overhead, B={s[0]} T={s[1]}", f(over and 100 * (over - 1), "+.1f", "%"),
               "≤ 5%", over and over <= 1.05, not over or over >= 0.97)
        if cn:
            target(f"no-op hooks at every point but attn_scores / pattern, overhead, B={s[0]} T={s[1]}",
                   f(over_n and 100 * (over_n - 1), "+.1f", "%"), "≤ 2%", over_n and over_n <= 1.02,
                   not over_n or over_n >= 0.97)
    out += ["", "### A no-op hook at every hook point", "",
            "| B×T | lc hooks registered / called | TL hooks registered / called | libcircuits ms | vs lc forward "
            "| lc, all but attn_scores / pattern, ms | vs lc forward | TL run_with_hooks ms | vs TL forward "
            "| speed-up vs TL |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows

    # cache
    rows = []
    for s in shapes:
        raw = fwd.get(("circuits", "cache_raw", s))
        for c, label in [(get("circuits", "cache", s), "default load")] + ([(raw, "weights as stored (mapped)")] if raw else []):
            c0, t0, t = get("circuits", "plain", s), get("tl", "plain", s), get("tl", "cache", s)
            over = ratio(ms(c), ms(c0)) if label == "default load" else None
            budget = memory_budget(c, weight_bytes)
            rows.append(f"| {s[0]}×{s[1]} | {label} | {f(ms(c))} | {f(over and 100 * (over - 1), '+.1f', '%')} | "
                        f"{f(c and c['cache_bytes'] / MB, '.0f')} | {f(rss_mb(c), '.0f')} | {f(budget, '.0f')} | "
                        f"{f(ms(t))} | {f(t and t.get('cache_bytes', 0) / MB, '.0f')} | {f(rss_mb(t), '.0f')} | "
                        f"{f(ratio(ms(t), ms(c)), '.2f', '×')} |")
            if over is not None:
                target(f"cache of every activation, overhead, B={s[0]} T={s[1]}", f(100 * (over - 1), "+.1f", "%"),
                       "≤ 5%", over <= 1.05, over >= 0.97)
            if over is not None and c.get("copy_ms"):  # issue 19: within the time of copying its bytes
                extra = ms(c) - ms(c0)
                target(f"cache of every activation, time over the forward vs one memcpy of its bytes, B={s[0]} T={s[1]}",
                       f"{extra:.1f} ms / {c['copy_ms']:.1f} ms", "≤ 1×", extra <= c["copy_ms"], extra >= -0.03 * ms(c0))
            if budget and c:
                target(f"cache peak RSS vs weights + cache + one layer + logits, B={s[0]} T={s[1]}, {label}",
                       f"{rss_mb(c):.0f} MB / {budget:.0f} MB", f"≤ {MEMORY_SLACK:.2f}×", rss_mb(c) <= budget * MEMORY_SLACK)
    out += ["", "### run_with_cache of every hook point (one cache reused across runs)", "",
            "| B×T | libcircuits weights | libcircuits ms | vs lc forward | cache MB | peak RSS MB | weights + cache "
            "+ layer + logits MB | TL run_with_cache ms | TL cache MB | TL peak RSS MB | speed-up vs TL |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows

    # load
    L = lambda *k: load.get(k)
    lt = lambda r: f(r and r["median_ms"], ".1f")
    res = lambda r: f(r and 100 * r["resident_before"], ".0f", "%")
    warm_raw = L("circuits", True, "warm")
    rows = [
        f"| libcircuits, weights as stored (zero-copy mapping) | {lt(warm_raw)} | {lt(L('circuits', True, 'cold'))} "
        f"({res(L('circuits', True, 'cold'))} resident before) |",
        f"| ... first forward B=1 T=128 after that load (faults the weights in) | — | "
        f"{f(L('circuits', True, 'first_forward') and L('circuits', True, 'first_forward')['ms'])} "
        f"(next: {lt(L('circuits', True, 'second_forward'))}) |",
        f"| libcircuits, default load (TL processing: fold_ln, centring, fold_value_biases) | "
        f"{lt(L('circuits', False, 'warm'))} | {lt(L('circuits', False, 'cold'))} |",
        f"| ... first forward B=1 T=128 after that load | — | "
        f"{f(L('circuits', False, 'first_forward') and L('circuits', False, 'first_forward')['ms'])} "
        f"(next: {lt(L('circuits', False, 'second_forward'))}) |",
        f"| torch: safetensors.torch.load_file | {lt(L('torch', 'safetensors', 'warm'))} | "
        f"{lt(L('torch', 'safetensors', 'cold'))} ({res(L('torch', 'safetensors', 'cold'))} resident before) |",
        f"| torch: GPT2LMHeadModel.from_pretrained | {lt(L('torch', 'from_pretrained', 'warm'))} | "
        f"{lt(L('torch', 'from_pretrained', 'cold'))} |",
        f"| TL: from_pretrained's steps (HF load, convert, processing) | {lt(L('tl', 'tl_load', 'warm'))} | "
        f"{lt(L('tl', 'tl_load', 'cold'))} |",
    ]
    if weight_bytes:
        target(f"load {weight_bytes / 1e6:.0f} MB F32 safetensors, warm page cache", lt(warm_raw) + " ms", "≤ 20 ms",
               warm_raw and warm_raw["median_ms"] <= 20)
    out += ["", f"### Load ({f(weight_bytes and weight_bytes / 1e6, '.0f')} MB of F32 safetensors)", "",
            "| what | warm page cache ms | cold page cache ms |", "|---|---:|---:|"] + rows

    # composition
    if comp:
        cg = gemm["composition"]
        rows = []
        tl = {r["mode"]: r["seconds"] for r in comp if r["what"] == "tl_composition"}
        for r in comp:
            if r["what"] != "composition":
                continue
            x = ratio(r["seconds"], cg["limit_s"])
            sp = ratio(tl.get(r["mode"]), r["seconds"])
            rows.append(f"| {r['mode']} | {r['seconds']:.3f} | {r['gemm_gflop']:.0f} | {cg['limit_s']:.3f} | "
                        f"{f(x, '.2f', '×')} | {f(tl.get(r['mode']), '.2f')} | {f(sp, '.1f', '×')} |")
            target(f"composition scores ({r['mode']}), time / GEMM-bound limit", f(x, ".2f", "×"), "≤ 1.3×", x <= 1.3,
                   x >= 1.0)
            target(f"composition scores ({r['mode']}), speed-up vs TL", f(sp, ".1f", "×"), "≥ 10×",
                   None if sp is None else sp >= 10)
        out += ["", "### Composition scores (GPT-2-small-shaped attention-only model, d_vocab 1000; best of reps)", "",
                "| mode | libcircuits s | GEMM GFLOP | GEMM-bound limit s | × limit | TL all_composition_scores s "
                "| speed-up vs TL |", "|---|---:|---:|---:|---:|---:|---:|"] + rows
        tl_rss = next((r["peak_rss_gb"] for r in comp if r["what"] == "tl_composition_rss"), None)
        if tl_rss:
            out += ["", f"TransformerLens's peak RSS while computing them: {tl_rss:.1f} GB."]

    # GEMM rates
    rows = [f"| {r['label']} | {r['m']}×{r['k']} · {r['k']}×{r['n']}{'ᵀ' if r['trans_b'] else ''} | {r['count']} | "
            f"{r['gflops']:.1f} |" for r in gemm["shapes"] if r["what"] == "gemm"]
    out += ["", "### sgemm rates measured in this run (OpenBLAS, same threads; median)", "",
            "| GEMM | shape (M×K · K×N) | products per timing | GFLOP/s |", "|---|---|---:|---:|"] + rows

    ob = m.get("openblas", {})
    head = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['threads']} threads for every contender; "
            f"OpenBLAS core {ob.get('corename', '?')} ({ob.get('config', '?')}){coretype(m)}; sgemm peak "
            f"{gemm['peak_gflops']:.0f} GFLOP/s ({a.peak_n}² square); load average at start "
            f"{m['load'][0]:.1f}. Medians of {a.reps} runs after {a.warmup} warm-up(s); each configuration in its "
            f"own process.", "",
            "### Targets", "", "| target | measured | goal | |", "|---|---:|---:|---|"]
    return "\n".join(head + targets + [""] + out) + "\n"


FAMILY_NAMES = {"llama": "Llama-shaped", "pythia": "Pythia-shaped (GPT-NeoX)"}


def probe_diff(x, y):
    """Largest difference of two runs' first logits at the last position (same-weights check)."""
    if not x or not y or not x.get("logits_probe") or not y.get("logits_probe"):
        return None
    return max(abs(p - q) for p, q in zip(x["logits_probe"], y["logits_probe"]))


def render_family(a, m, gemm, fwd, lc_load):
    """The report of bench/run.py --family llama|pythia: issue 13's goals, the forward table,
    the sgemm rates."""
    md = m["model"]
    shapes = sorted({k[2] for k in fwd}, key=lambda s: (s[0] * s[1], s))
    get = lambda who, s: fwd.get((who, "plain", s))
    targets, rows = [], []
    for s in shapes:
        c, t, tl = get("circuits", s), get("torch", s), get("tl", s)
        g = gemm["forward"].get(s, {})
        vs_torch = ratio(ms(t), ms(c))
        of_limit = ratio(g.get("limit_ms"), ms(c))
        of_peak = ratio(g.get("peak_ms"), ms(c))
        rows.append(f"| {s[0]}×{s[1]} | {f(ms(c))} | {f(c and c['tokens_per_s'], '.0f')} | {f(ms(t))} | {f(ms(tl))} | "
                    f"{f(vs_torch, '.2f', '×')} | {f(ratio(ms(tl), ms(c)), '.2f', '×')} | {f(g.get('gflop'), '.1f')} | "
                    f"{f(g.get('peak_ms'), '.0f')} | {f(of_peak and 100 * of_peak, '.0f', '%')} | "
                    f"{f(g.get('limit_ms'), '.0f')} | {f(of_limit and 100 * of_limit, '.0f', '%')} | "
                    f"{f(rss_mb(c), '.0f')} / {f(rss_mb(t), '.0f')} / {f(rss_mb(tl), '.0f')} | "
                    f"{f(probe_diff(c, tl), '.1e')} |")
        if s == (1, 128):
            targets.append(f"| forward vs PyTorch eager, B=1 T=128 | {f(vs_torch, '.2f', '×')} | ≥ 1.4× | "
                           f"{met(vs_torch and vs_torch >= 1.4)} |")
        if s in ((1, 1024), (8, 128)):
            targets.append(f"| forward, fraction of the GFLOP-at-sgemm-peak bound, B={s[0]} T={s[1]} | "
                           f"{f(of_peak and 100 * of_peak, '.0f', '%')} | ≥ 90% | "
                           f"{met(of_peak and of_peak >= 0.9, not of_peak or of_peak <= 1.0)} |")
    ob = m.get("openblas", {})
    lc_what = ("the Hugging Face directory" if lc_load == "hf" else
               "the TL-layout export of the same weights (TransformerLens's own conversion, unprocessed; "
               "libcircuits' default load applies TL's processing)")
    loads = {who: next((get(who, s)["load_ms"] for s in shapes if get(who, s) and "load_ms" in get(who, s)), None)
             for who in ("circuits", "torch", "tl")}
    procs = ("a process per shape and contender, interleaved per shape" if getattr(a, "process_per_shape", False) else
             "each contender in one process that loads once and runs the shapes smallest first (the peak RSS of a "
             "shape is that process's so far)")
    head = [f"{FAMILY_NAMES.get(md['family'], md['family'])}{' (tiny)' if md.get('tiny') else ''} model: "
            f"d_model {md['d_model']}, {md['n_layers']} layers, {md['n_heads']} query heads, {md['n_kv_heads']} K/V "
            f"heads, d_head {md['d_head']}, d_mlp {md['d_mlp']}, vocab {md['d_vocab']}, random weights, "
            f"{md['weight_bytes'] / 1e9:.2f} GB of F32 safetensors (`{md['hf_dir']}`). libcircuits loads {lc_what} "
            f"(`{md['lc_dir']}`) with the default options. Load times (warm page cache, one load each): libcircuits "
            f"{f(loads['circuits'] and loads['circuits'] / 1e3, '.1f')} s, PyTorch from_pretrained "
            f"{f(loads['torch'] and loads['torch'] / 1e3, '.1f')} s, TransformerLens's steps "
            f"{f(loads['tl'] and loads['tl'] / 1e3, '.1f')} s.", "",
            f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['threads']} threads for every contender; "
            f"OpenBLAS core {ob.get('corename', '?')} ({ob.get('config', '?')}){coretype(m)}; sgemm peak "
            f"{gemm['peak_gflops']:.0f} GFLOP/s ({a.peak_n}² square); load average at start {m['load'][0]:.1f}. "
            f"Medians of {a.reps} runs after {a.warmup} warm-up(s); {procs}.", "",
            "#### Goals (issue 13)", "", "| goal | measured | target | |", "|---|---:|---:|---|"]
    out = ["", "#### Forward (logits for every position)", "",
           "| B×T | libcircuits ms | tokens/s | PyTorch eager ms | TL ms | speed-up vs PyTorch | vs TL | GEMM GFLOP "
           "| GFLOP at sgemm peak, ms | % of that bound | GEMM-bound limit ms | % of limit | peak RSS MB (lc / torch / TL) "
           "| lc − TL logits |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows
    rates = [f"| {r['label']} | {r['m']}×{r['k']} · {r['k']}×{r['n']}{'ᵀ' if r['trans_b'] else ''} | {r['count']} | "
             f"{r['gflops']:.1f} |" for r in gemm["shapes"] if r["what"] == "gemm"]
    out += ["", "#### sgemm rates measured in this run (OpenBLAS, same threads; median)", "",
            "| GEMM | shape (M×K · K×N) | products per timing | GFLOP/s |", "|---|---|---:|---:|"] + rates
    return "\n".join(head + targets + out) + "\n"
