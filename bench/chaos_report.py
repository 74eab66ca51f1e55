"""Owns the chaos soak's verdicts and report: it explains every failed
operation and every connection lbctl closed by the kills and drains the soak
caused (or calls it unexplained), and renders the summary (stdout) and
bench/CHAOS.md.

Rules, in order, for a failed operation (a corrupted byte is never explained):
  worker kill   its client connection was in the killed worker's socket table
                (read while the worker was stopped, just before SIGKILL), and
                the kill fell between the connection's open and the failure;
  backend kill  the backend that served it (echo greeting, X-Backend header)
                was killed between the operation's start and its end;
  backend kill (which unknown)  no backend had answered yet and some backend
                was killed during the operation;
  unexplained   anything else.
A kept-alive client connection lbctl closed between requests is explained by
a worker kill (same rule) or a drain (a reload, resize or upgrade that ran
while it was open); otherwise it is unexplained too.
"""

import collections

MIB = 1 << 20


def _covers(a, t, b):
    return a <= t <= b


def attribute(rec, kills, bkills, drains):
    """Set the verdict of every op and close; return the unexplained count."""
    unexplained = 0
    for op in rec.ops:
        if op.ok:
            op.verdict = "client reset" if op.reset_by_client else "ok"
            continue
        if op.corrupt or op.cause == "corrupt":  # a kill cuts a stream, never alters it
            op.verdict, op.why = "unexplained", "corrupted bytes are never explained"
            unexplained += 1
            continue
        op.verdict, op.why = judge(op.listen_port, op.client_port, op.t_open, op.t_end, kills)
        if not op.verdict:
            for b in bkills:
                if op.backend == b["name"] and _covers(op.t_start, b["t"], op.t_end):
                    op.verdict = "backend kill"
                    op.why = f"backend {b['name']} killed at {{{b['t']}}}"
                    break
        if not op.verdict and not op.backend:
            for b in bkills:
                if _covers(op.t_start, b["t"], op.t_end):
                    op.verdict = "backend kill (which unknown)"
                    op.why = f"no backend had answered; backend {b['name']} killed at {{{b['t']}}}"
                    break
        if not op.verdict:
            op.verdict, op.why = "unexplained", "no kill overlapped it" + where(op, kills)
            unexplained += 1
    for c in rec.closes:
        c.verdict, c.why = judge(c.listen_port, c.client_port, c.t_open, c.t_seen, kills)
        if not c.verdict:
            for d in drains:
                if c.t_open <= d["t_end"] and c.t_seen >= d["t_start"]:
                    c.verdict = "drain"
                    c.why = f"{d['what']} at {{{d['t_start']}}}"
                    break
        if not c.verdict:
            c.verdict, c.why = "unexplained", "no kill or drain while it was open"
            unexplained += 1
    return unexplained


def where(op, kills):
    """For an unexplained failure: who held its connection at each kill
    while it was open (a worker's pid, "queued" in an accept queue)."""
    seen = [
        f"; at the kill of {k['pid']} at {{{k['t']}}} its connection was held by "
        f"{k['census'].get((op.listen_port, op.client_port), 'nobody')}"
        for k in kills
        if "census" in k and _covers(op.t_open, k["t"], op.t_end)
    ]
    return "".join(seen)


def judge(listen_port, client_port, t_open, t_end, kills):
    for k in kills:
        if (listen_port, client_port) in k["ports"] and _covers(t_open, k["t"], t_end):
            why = f"on worker {k['pid']} (slot {k['slot']}, {k['state']}) killed at {{{k['t']}}}"
            return "worker kill", why
    return "", ""


def rel(t, t0):
    return f"+{t - t0:.1f}s"


def fill_times(text, t0):
    """Replace {t} placeholders (absolute monotonic times) by +s offsets."""
    out, i = "", 0
    while True:
        j = text.find("{", i)
        if j < 0:
            return out + text[i:]
        k = text.find("}", j)
        out += text[i:j] + rel(float(text[j + 1 : k]), t0)
        i = k + 1


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def build(rec, meta, actions, leaks, checks_failed, unexplained):
    """Return the report (markdown)."""
    t0 = meta["t0"]
    ops = rec.ops
    failed = [o for o in ops if not o.ok]
    corrupt = sum(o.corrupt for o in ops)
    by_verdict = collections.Counter(o.verdict for o in failed)
    close_verdict = collections.Counter(c.verdict for c in rec.closes)
    http = [o for o in ops if o.kind.startswith("http")]
    transfers = [o for o in ops if o.kind == "tcp_transfer"]
    act_count = collections.Counter(a["what"] for a in actions)
    gib = sum(o.nbytes for o in ops) / (1 << 30)

    def fails(seq):
        bad = [o for o in seq if not o.ok]
        return len(bad), sum(1 for o in bad if o.verdict == "unexplained")

    hf, hu = fails(http)
    tf, tu = fails(transfers)
    explained = ", ".join(f"{v} {n}" for v, n in sorted(by_verdict.items()) if v != "unexplained")
    summary_rows = [
        ("duration / seed", f"{meta['duration']:.0f}s of load, seed {meta['seed']}"),
        ("operations", f"{len(ops)} ({len(ops) - len(failed)} ok), {gib:.2f} GiB checked"),
        ("HTTP requests", f"{len(http)}, {hf} failed ({hu} unexplained)"),
        (
            "TCP transfers 1-48 MiB",
            f"{len(transfers)}, {sum(o.nbytes for o in transfers) / MIB:.0f} MiB, "
            f"{tf} failed ({tu} unexplained)",
        ),
        ("failures", f"{len(failed)}: {explained or 'none explained'}; unexplained "
         f"{by_verdict.get('unexplained', 0)}"),
        (
            "kept-alive conns closed by lbctl",
            f"{len(rec.closes)}: "
            + (", ".join(f"{v} {n}" for v, n in sorted(close_verdict.items())) or "none"),
        ),
        ("bytes corrupted", corrupt),
        ("chaos actions", ", ".join(f"{w} {n}" for w, n in sorted(act_count.items()))),
        ("chaos checks failed", checks_failed),
        ("leaks", leaks["summary"]),
        ("verdict", "PASS" if not (unexplained or corrupt or checks_failed or leaks["bad"])
         else "FAIL"),
    ]
    summary = table(("chaos soak", "result"), summary_rows)

    kinds = sorted({o.kind for o in ops})
    kind_rows = []
    for k in kinds:
        seq = [o for o in ops if o.kind == k]
        v = collections.Counter(o.verdict for o in seq)
        kind_rows.append(
            (
                k,
                len(seq),
                v["ok"] + v["client reset"],
                len(seq) - v["ok"] - v["client reset"],
                v["worker kill"],
                v["backend kill"] + v["backend kill (which unknown)"],
                v["unexplained"],
                f"{sum(o.nbytes for o in seq) / MIB:.1f}",
            )
        )
    cause = collections.Counter((o.cause, o.verdict) for o in failed)
    cause_rows = [(c, v, n) for (c, v), n in sorted(cause.items())]

    parts = [
        "# Chaos soak",
        "",
        f"`{meta['command']}` — lbctl {meta['commit']}, {meta['when']}, "
        f"{meta['machine']}. Workers {meta['workers']}, fd limit {meta['nofile']} "
        f"per lbctl process, {meta['backends']}.",
        "",
        summary,
        "",
        "## Operations by kind",
        "",
        table(
            ("kind", "done", "ok", "failed", "worker kill", "backend kill", "unexplained",
             "MiB checked"),
            kind_rows,
        ),
        "",
        "## Failures by cause",
        "",
        table(("cause", "explained by", "count"), cause_rows) if cause_rows else "none",
        "",
        "## Leaks after the run",
        "",
        table(("what", "before", "after", "verdict"), leaks["rows"]),
        "",
        "## Chaos timeline",
        "",
        table(
            ("at", "action", "result"),
            [(rel(a["t"], t0), a["what"], fill_times(a["note"], t0)) for a in actions],
        ),
        "",
        "## Every failure, explained",
        "",
    ]
    if not failed and not rec.closes:
        parts.append("No operation failed and lbctl closed no kept-alive connection.")
    for o in sorted(failed, key=lambda o: o.t_end):
        parts.append(
            f"- {rel(o.t_end, t0)} {o.kind} (client port {o.client_port}, opened "
            f"{rel(o.t_open or o.t_start, t0)}, first answer byte "
            f"{rel(o.t_first, t0) if o.t_first else 'none'}, backend "
            f"{o.backend or '?'}, {o.nbytes} bytes checked): {o.cause} — {o.detail} → "
            f"**{o.verdict}**: {fill_times(o.why, t0)}"
        )
    for c in sorted(rec.closes, key=lambda c: c.t_seen):
        parts.append(
            f"- {rel(c.t_seen, t0)} kept-alive connection (client port {c.client_port}) "
            f"closed by lbctl ({c.how}) → **{c.verdict}**: {fill_times(c.why, t0)}"
        )
    return "\n".join(parts) + "\n"
