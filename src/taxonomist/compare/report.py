"""The report of a comparison: headline numbers, the three questions answered, and the figures.

Everything here is computed from the results dict (`results.json`); nothing is
measured. `report.html` is self-contained (inline SVG), `report.md` holds the
same text and tables.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from . import _uncertainty as U
from .svg import Marker, Series, line_chart

__all__ = ["headline", "answers", "write_report", "render_html", "render_markdown"]


# ----- formatting -----------------------------------------------------------------------
def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def pci(p: float | None, n: int | None) -> str:
    """A proportion with its 95% Wilson interval and n; under `MIN_N` records it is marked inconclusive."""
    if p is None or not n:
        return pct(p)
    c = U.proportion(p, int(n))
    tail = f"95% CI {100 * c['lo']:.1f}-{100 * c['hi']:.1f}%, n = {int(n):,}"
    return f"{pct(p)} ({tail}{', inconclusive' if c['inconclusive'] else ''})"


def cell(p: float | None, n: int | None) -> str:
    """The table form of `pci`: "84.3% [82.6-85.9]", with "?" when inconclusive."""
    if p is None or not n:
        return pct(p)
    c = U.proportion(p, int(n))
    return f"{pct(p)} [{100 * c['lo']:.1f}-{100 * c['hi']:.1f}]" + ("?" if c["inconclusive"] else "")


def diff_sentence(d: dict[str, Any], a: str, b: str, what: str = "more accurate than") -> str:
    """A comparison that follows its interval: a difference only when the paired 95% CI excludes zero."""
    if d.get("diff") is None:
        return f"{a} and {b} were not scored on common records"
    if d["inconclusive"]:
        return f"{a} vs {b}: inconclusive (n = {d['n']:,} common records, fewer than {U.MIN_N})"
    lo, hi = 100 * d["lo"], 100 * d["hi"]
    if lo > 0:
        return f"{a} is {what} {b} by {100 * d['diff']:.1f} pts (95% CI {lo:.1f} to {hi:.1f}, n = {d['n']:,})"
    if hi < 0:
        return f"{b} is {what} {a} by {-100 * d['diff']:.1f} pts (95% CI {-hi:.1f} to {-lo:.1f}, n = {d['n']:,})"
    return f"no clear difference between {a} and {b} ({100 * d['diff']:+.1f} pts, 95% CI {lo:.1f} to {hi:.1f}, n = {d['n']:,})"


def slope_text(d: dict[str, Any] | None) -> str:
    if not d or d.get("slope") is None:
        return "n/a"
    return (f"{100 * d['slope']:+.2f} pts/month (95% CI {100 * d['lo']:+.2f} to {100 * d['hi']:+.2f}, n = {d['n']:,}"
            + (", inconclusive" if d["inconclusive"] else "") + ")")


def _difference(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((d for d in (results.get("uncertainty") or {}).get("differences", []) if d["key"] == key), None)


def _engine_difference(results: dict[str, Any], a: str, b: str) -> tuple[dict[str, Any], str, str] | None:
    """The stored paired difference of two engines, oriented a - b."""
    d = _difference(results, f"engines/{a}|{b}")
    if d is not None:
        return d, a, b
    d = _difference(results, f"engines/{b}|{a}")
    if d is not None:
        return d, b, a
    return None


def money(x: float) -> str:
    if x == 0:
        return "$0"
    if abs(x) < 0.01:
        return f"${x:.2g}"
    if abs(x) < 100:
        return f"${x:,.2f}"
    return f"${x:,.0f}"


def volume(v: float | None) -> str:
    if v is None:
        return "never"
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:,.0f}"


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def secs(s: float) -> str:
    if s < 1:
        return f"{1000 * s:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


# ----- headline numbers ----------------------------------------------------------------
def _runs_mean(results: dict[str, Any], run_ids: list[str], metric: str = "accuracy") -> float:
    by_id = {r["run_id"]: r for r in results["runs"]}
    return float(np.mean([by_id[i][metric] for i in run_ids]))


def _best(curves: dict[str, list[dict[str, Any]]], engines: list[str], k: str = "all") -> tuple[str, dict[str, Any]] | None:
    best = None
    for e in engines:
        p = next((p for p in curves.get(e, []) if p["k"] == k), None)
        if p and (best is None or p["accuracy"] > best[1]["accuracy"]):
            best = (e, p)
    return best


def _families(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    trained = [e["label"] for e in results["engines"] if e["family"] == "trained"]
    retrieval = [e["label"] for e in results["engines"] if e["family"] == "retrieval"]
    return trained, retrieval


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The numbers the answers quote. Items with `runs` are means over those runs' stored predictions."""
    items: list[dict[str, Any]] = []
    lc = results["learning_curve"]["curves"]
    trained, retrieval = _families(results)
    for e in [*trained, *retrieval]:
        p = next((p for p in lc.get(e, []) if p["k"] == "all"), None)
        if p:
            items.append(_ci({"key": f"accuracy_all/{e}", "label": f"{e}: accuracy with all examples", "engine": e,
                              "value": _runs_mean(results, p["run_ids"]), "metric": "accuracy", "runs": p["run_ids"], "format": "pct"},
                             p["n_test"]))
            items.append({"key": f"macro_f1_all/{e}", "label": f"{e}: macro-F1 with all examples", "engine": e,
                          "value": _runs_mean(results, p["run_ids"], "macro_f1"), "metric": "macro_f1", "runs": p["run_ids"], "format": "pct"})
    bt = results.get("backtest")
    if bt:
        for e, body in bt["engines"].items():
            never = body["policies"].get("never")
            if not never:
                continue
            items.append(_ci({"key": f"in_period/{e}", "label": f"{e}: accuracy in the training period (held out)", "engine": e,
                              "value": _runs_mean(results, [body["reference_run_id"]]), "metric": "accuracy",
                              "runs": [body["reference_run_id"]], "format": "pct"}, body.get("reference_n")))
            items.append(_ci({"key": f"frozen_later/{e}", "label": f"{e}, never retrained: mean accuracy, months {bt['months'][0]}-{bt['months'][-1]}",
                              "engine": e, "value": _runs_mean(results, never["run_ids"]), "metric": "accuracy", "runs": never["run_ids"],
                              "format": "pct", "pooled": True}, never.get("n")))
            for name, pol in body["policies"].items():
                if name != "never":
                    items.append(_ci({"key": f"policy_{name}/{e}", "label": f"{e}, retrained '{name}': mean accuracy, months {bt['months'][0]}-{bt['months'][-1]}",
                                      "engine": e, "value": _runs_mean(results, pol["run_ids"]), "metric": "accuracy", "runs": pol["run_ids"],
                                      "format": "pct", "pooled": True}, pol.get("n")))
    nc = (results.get("events") or {}).get("new_category")
    if nc:
        for e, body in nc["engines"].items():
            last = body["points"][-1]
            items.append(_ci({"key": f"new_category/{e}", "label": f"{e}: recall on {nc['category']} with {last['k']} examples",
                              "engine": e, "value": _runs_mean(results, [last["run_new"]]), "metric": "accuracy", "runs": [last["run_new"]],
                              "format": "pct"}, last.get("n_new")))
    unc = results.get("uncertainty") or {}
    for e, pols in unc.get("decay", {}).items():
        for name, d in pols.items():
            if d["slope"] is not None:
                items.append({"key": f"decay_{name}/{e}", "label": f"{e}, {'never retrained' if name == 'never' else f'retrained {name!r}'}: accuracy change per month",
                              "engine": e, "value": d["slope"], "ci": [d["lo"], d["hi"]], "n": d["n"], "inconclusive": d["inconclusive"],
                              "format": "slope", "decay_runs": d["run_ids"], "seed": d["seed"], "reps": d["reps"]})
    for e, r in unc.get("review", {}).items():
        items.append({"key": f"review_share/{e}", "label": f"{e}: share left to people for {pct(r['target'])} accuracy on answered records",
                      "engine": e, "value": r["value"], "ci": [r["lo"], r["hi"]], "n": r["n"], "inconclusive": r["inconclusive"],
                      "format": "pct", "review_run": r["run_id"], "thresholds": r["thresholds"]})
    for d in unc.get("differences", []):
        if d["diff"] is None or d["kind"] == "crossover":
            continue
        label = (f"{d['a']} minus {d['b']}: accuracy with all examples" if d["kind"] == "engines"
                 else f"{d['engine']}: retrained '{d['a']}' minus never retrained, accuracy")
        items.append({"key": f"diff/{d['key']}", "label": label, "value": d["diff"], "ci": [d["lo"], d["hi"]], "n": d["n"],
                      "inconclusive": d["inconclusive"], "format": "pts", "runs_a": d["runs_a"], "runs_b": d["runs_b"],
                      "seed": d["seed"], "reps": d["reps"]})
    cs = results.get("cost_speed")
    if cs:
        for pair in cs["break_even"]:
            items.append({"key": f"break_even/{pair['a']}|{pair['b']}", "label": f"break-even: {pair['a']} vs {pair['b']} (items/month)",
                          "value": pair["volume"], "format": "volume", "cost_models": [pair["a"], pair["b"]]})
    return items


def _ci(item: dict[str, Any], n: int | None) -> dict[str, Any]:
    """Add the 95% Wilson interval of the item's proportion on `n` records (see `_uncertainty`)."""
    if n:
        c = U.proportion(item["value"], int(n))
        item.update({"ci": [c["lo"], c["hi"]], "n": c["n"], "inconclusive": c["inconclusive"]})
    return item


# ----- the three answers ---------------------------------------------------------------
def answers(results: dict[str, Any]) -> dict[str, str]:
    trained, retrieval = _families(results)
    lc = results["learning_curve"]
    curves = lc["curves"]
    out: dict[str, str] = {}

    # 1. How many examples?
    lines = []
    best_all = _best(curves, trained + retrieval)
    if best_all:
        e, p = best_all
        lines.append(f"With all labelled examples (about {p['k_value']:.0f} per category, {lc['n_classes']} categories) "
                     f"the most accurate engine is {e}: {pci(p['accuracy'], p['n_test'])} accuracy, macro-F1 {pct(p['macro_f1'])} "
                     f"(mean of {p['seeds']} seed{'s' if p['seeds'] > 1 else ''}).")
        for other in trained + retrieval:
            od = _engine_difference(results, e, other) if other != e else None
            if od:
                lines.append(f"  {diff_sentence(*od)}.")
    for k in ("1", "5", "10"):
        b = _best(curves, trained + retrieval, k)
        if b:
            lines.append(f"With {k} example{'s' if k != '1' else ''} per category the best is {b[0]} at {pci(b[1]['accuracy'], b[1]['n_test'])}.")
    for c in lc["crossover"]:
        if c["crossover_k"] is None:
            lines.append(f"{c['trained']} never overtakes {c['retrieval']} on the k tried.")
        elif c["crossover_k"] == c["points"][0]["k"]:
            lines.append(f"{c['trained']} is at least as accurate as {c['retrieval']} from the smallest k tried ({c['crossover_k']} per category"
                         f"{_crossover_caveat(c)}).")
        else:
            lines.append(f"{c['trained']} overtakes {c['retrieval']} from {c['crossover_k']} examples per category "
                         f"(compared on the {c['points'][0]['n']} records both were scored on{_crossover_caveat(c)}).")
        sentence = _crossover_sentence(results, c)
        if sentence:
            lines.append(sentence)
    for e, c in ((results.get("ceiling") or {}).get("engines") or {}).items():
        det, other = c["accuracy_determined"], c["accuracy_other"]
        lines.append(f"  {e} is {100 * c['distance']:.1f} pts below the accuracy ceiling of {pct(c['ceiling'])} on its {c['n']:,} records "
                     f"({pct(c['determined_share'])} have text that determines their category"
                     + (f"; on those it scores {pci(det['value'], det['n'])}" if det else "")
                     + (f", on the rest {pci(other['value'], other['n'])}" if other else "") + ").")
    out["examples"] = "\n".join(lines)

    # 2. Six months later?
    bt = results.get("backtest")
    if not bt:
        reason = next((s["reason"] for s in results["skipped"] if s["experiment"] == "backtest"), "")
        out["six_months"] = f"Not measured: {reason}."
    else:
        lines = []
        m0, m1 = bt["months"][0], bt["months"][-1]
        for e, body in bt["engines"].items():
            never = body["policies"].get("never")
            if not never:
                continue
            ref = body["reference_accuracy"]
            later = never["mean_accuracy"]
            late = float(np.mean([m["accuracy"] for m in never["months"][-3:]]))
            n_late = sum(m.get("n", 0) for m in never["months"][-3:])
            decay = ((results.get("uncertainty") or {}).get("decay") or {}).get(e, {})
            lines.append(f"{e} trained on months {bt['train_months'][0]}-{bt['train_months'][1]} scores {pci(ref, body.get('reference_n'))} on held-out records of "
                         f"that period, {pci(later, never.get('n'))} on average over months {m0}-{m1} and {pci(late, n_late)} in the last three months "
                         f"({pts(late - ref)}) if never retrained; accuracy changes by {slope_text(decay.get('never'))}.")
            for name in ("monthly", "drift"):
                pol = body["policies"].get(name)
                if pol:
                    how = "retrained every month" if name == "monthly" else f"retrained when label-free drift (confidence drop) exceeded {bt['drift_threshold']:.2f}"
                    d = _difference(results, f"policy/{e}/{name}")
                    vs = f"; {diff_sentence(d, f'retrained {name!r}', 'never retrained')}" if d else ""
                    lines.append(f"  {how}: {pci(pol['mean_accuracy'], pol.get('n'))} on average with {pol['n_retrains']} retrains "
                                 f"({secs(pol['train_seconds'])} of training), {slope_text(decay.get(name))}{vs}.")
        out["six_months"] = "\n".join(lines)

    # 3. What does change cost?
    ev = results.get("events") or {}
    lines = []
    nc = ev.get("new_category")
    if nc:
        lines.append(f"New category {nc['category']} ({nc['name']}), first seen in month {nc['first_month']}:")
        for e, body in nc["engines"].items():
            pts_ = body["points"]
            k0 = pts_[0]
            last = pts_[-1]
            if body["family"] == "retrieval":
                lines.append(f"  {e} uses it as soon as examples are added: recall {pci(last['recall_new'], last.get('n_new'))} with {last['k']} examples "
                             f"(update took {secs(last['update_seconds'])}, no training; {pct(k0['recall_new'])} before the category existed).")
            else:
                lines.append(f"  {e} cannot predict it until retrained ({pct(k0['recall_new'])} before); after retraining with {last['k']} examples "
                             f"recall is {pci(last['recall_new'], last.get('n_new'))} (training {secs(last['update_seconds'])}).")
    else:
        reason = next((s["reason"] for s in results["skipped"] if s["experiment"] == "new_category"), "not run")
        lines.append(f"New category: not replayed ({reason}).")
    mg = ev.get("merge")
    if mg:
        a, b = mg["sources"]
        lines.append(f"Merging {a}+{b} (the most confused pair):")
        for e, body in mg["engines"].items():
            lines.append(f"  {e}: {pci(body['before'], body.get('n'))} before, {pci(body['mapped'], body.get('n'))} by mapping its outputs (no retraining), "
                         f"{pci(body['refit'], body.get('n_refit'))} refitted on merged labels ({secs(body['refit_seconds'])}).")
    nw = ev.get("network")
    if nw:
        lines.append(f"Second network {nw['network']} through crosswalk {nw['crosswalk']} ({nw['their_codes']} of their codes, "
                     f"{len(nw['merges'])} of ours receiving several of theirs, {nw['unmapped_records']} records unmapped):")
        for e, body in nw["engines"].items():
            lines.append(f"  {e}: {pci(body['as_is'], body.get('n'))} on their records as is, {pci(body['with_history'], body.get('n'))} after adding "
                         f"{body['n_history']} of their mapped records ({secs(body['update_seconds'])}).")
    out["change"] = "\n".join(lines)

    # 4. Cost
    cs = results.get("cost_speed")
    lines = []
    if cs:
        for e, sp in cs["speed"].items():
            lines.append(f"{e}: p50 {sp['latency_p50_ms']:.1f} ms, p95 {sp['latency_p95_ms']:.1f} ms, {rate(sp['throughput_per_s'])} items/s, "
                         f"{money(sp['cost_per_1000'])} per 1,000 items of compute.")
        llm_like = [e["label"] for e in results["engines"] if e["name"] == "llm"]
        for pair in cs["break_even"]:
            # The text names the prompt-vs-train pairs; every pair is in the table.
            if not any(x.startswith("hosted LLM") or any(x.startswith(f"{n} ") for n in llm_like) for x in (pair["a"], pair["b"])):
                continue
            lines.append(f"Break-even between {pair['a']} and {pair['b']}: {volume(pair['volume'])} items/month "
                         f"(above it {pair['cheaper_above']} is cheaper).")
    lines += _measured_sentences(results)
    out["cost"] = "\n".join(lines)
    out["recommendation"] = _recommendation(results, trained, retrieval)
    return out


def _crossover_caveat(c: dict[str, Any]) -> str:
    n = c["points"][0]["n"] if c["points"] else 0
    if n < U.MIN_N:
        return f"; inconclusive: {n} common records, fewer than {U.MIN_N}"
    return ""


def crossover_interval(results: dict[str, Any], trained: str, retrieval: str) -> dict[str, Any]:
    """The crossover read through its intervals: from which k the trained engine is clearly ahead (or behind) for good.

    `ahead_from`: the smallest k from which the paired 95% CI of trained minus retrieval stays above zero at every
    larger k; `behind_until`: the largest k at which it is below zero; None when no k qualifies.
    """
    ds = [d for d in (results.get("uncertainty") or {}).get("differences", [])
          if d["kind"] == "crossover" and d["a"] == trained and d["b"] == retrieval and d["diff"] is not None]
    ahead_from = None
    for i, d in enumerate(ds):
        if all(not x["inconclusive"] and x["lo"] > 0 for x in ds[i:]):
            ahead_from = d["k"]
            break
    behind = [d["k"] for d in ds if not d["inconclusive"] and d["hi"] < 0]
    return {"points": ds, "ahead_from": ahead_from, "behind_until": behind[-1] if behind else None}


def _crossover_sentence(results: dict[str, Any], c: dict[str, Any]) -> str:
    ci = crossover_interval(results, c["trained"], c["retrieval"])
    if not ci["points"]:
        return ""
    last = ci["points"][-1]
    where = (f"clearly ahead (95% CI above zero) from k = {ci['ahead_from']}" if ci["ahead_from"] is not None
             else "never clearly ahead at every larger k")
    if ci["behind_until"] is not None:
        where += f", clearly behind up to k = {ci['behind_until']}"
    return (f"  Read through the intervals: {c['trained']} is {where}; at k = {last['k']}: "
            f"{diff_sentence(last, c['trained'], c['retrieval'])}.")


def _recommendation(results: dict[str, Any], trained: list[str], retrieval: list[str]) -> str:
    curves = results["learning_curve"]["curves"]

    def solid(engines: list[str]) -> list[str]:
        # A figure on fewer than MIN_N records is reported, never weighed.
        return [e for e in engines if any(p["k"] == "all" and p["n_test"] >= U.MIN_N for p in curves.get(e, []))]

    small = [e for e in trained + retrieval if e not in solid(trained + retrieval) and curves.get(e)]
    bt_t = _best(curves, solid(trained))
    bt_r = _best(curves, solid(retrieval))
    parts = []
    if bt_t and bt_r:
        t, pt = bt_t
        r, pr = bt_r
        od = _engine_difference(results, t, r)
        if od is not None and od[0]["diff"] is not None:
            d, a, b = od
            gap = d["diff"] if a == t else -d["diff"]
            lo = d["lo"] if a == t else -d["hi"]
            hi = d["hi"] if a == t else -d["lo"]
            clear = not d["inconclusive"] and (lo > 0 or hi < 0)
        else:
            gap, clear = pt["accuracy"] - pr["accuracy"], False
            d = None
        sentence = diff_sentence(*od) if od is not None else f"{t} {pct(pt['accuracy'])} vs {r} {pct(pr['accuracy'])}"
        if clear and gap > 0:
            parts.append(f"Train: {sentence}.")
        elif clear:
            parts.append(f"Retrieve: {sentence}.")
        else:
            parts.append(f"Accuracy does not decide ({sentence}); choose on change and cost below.")
        nc = (results.get("events") or {}).get("new_category")
        if nc and gap >= 0:
            parts.append(f"Keep {r} alongside for change: it handles a new category the day its examples are added, "
                         f"while {t} waits for its next retrain.")
    elif bt_t:
        parts.append(f"Train: {bt_t[0]} is the most accurate engine tried ({pci(bt_t[1]['accuracy'], bt_t[1]['n_test'])}); no retrieval engine was compared.")
    elif bt_r:
        parts.append(f"Retrieve: {bt_r[0]} ({pci(bt_r[1]['accuracy'], bt_r[1]['n_test'])}); no trained engine was compared.")
    if small:
        parts.append(f"Not weighed (fewer than {U.MIN_N} records scored, inconclusive): {', '.join(small)}.")
    bt_res = results.get("backtest")
    if bt_res and bt_t and bt_t[0] in bt_res["engines"]:
        from .experiments import choose_policy

        pol = bt_res["engines"][bt_t[0]]["policies"]
        chosen = choose_policy(pol)
        if chosen and chosen != "never":
            d = _difference(results, f"policy/{bt_t[0]}/{chosen}")
            parts.append(f"Retrain {bt_t[0]} with the '{chosen}' policy ({pol[chosen]['n_retrains']} retrains in "
                         f"{len(bt_res['months'])} months kept {pci(pol[chosen]['mean_accuracy'], pol[chosen].get('n'))}"
                         + (f" vs {pct(pol['never']['mean_accuracy'])} frozen" if "never" in pol else "")
                         + (f"; {diff_sentence(d, f'retrained {chosen!r}', 'never retrained')}" if d else "") + ").")
        elif chosen == "never":
            parts.append(f"Retraining {bt_t[0]} bought less than one point over the months tested; retrain on taxonomy changes only.")
    cs = results.get("cost_speed")
    if cs and bt_t:
        api = next((m for m in cs["cost_models"] if m["approach"].startswith("hosted LLM")), None)
        mine = next((m for m in cs["cost_models"] if m["approach"].startswith(f"{bt_t[0]} ")), None)
        if api and mine:
            from .costs import CostModel, break_even_volume

            fields_ = ("approach", "per_item", "fixed_per_month", "retrains_per_month")
            v = break_even_volume(CostModel(**{k: mine[k] for k in fields_}), CostModel(**{k: api[k] for k in fields_}))
            if v is not None:
                parts.append(f"On cost, self-hosting {bt_t[0]} beats a hosted LLM with RAG above {volume(v)} items a month "
                             f"({money(mine['fixed_per_month'])}/month fixed + {money(mine['per_item'] * 1000)} per 1,000 items vs "
                             f"{money(api['per_item'] * 1000)} per 1,000 items).")
    cheap_first = _cascade_sentence(results)
    if cheap_first:
        parts.append(cheap_first)
    return " ".join(parts) or "Not enough engines ran to recommend."


# ----- the first screen -------------------------------------------------------------------
def first_screen(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The three questions in one table: a row per figure, a column per engine, every figure with its interval.

    Cells read "value [95% CI]"; "?" marks a figure on fewer than `MIN_N` records (inconclusive).
    """
    trained, retrieval = _families(results)
    engines = [*trained, *retrieval]
    unc = results.get("uncertainty") or {}
    settings = results.get("settings") or {}
    vol = int(settings.get("volume") or 20000)
    rows: list[list[str]] = []

    def row(question: str, figure: str, values: dict[str, str]) -> None:
        rows.append([question, figure, *[values.get(e, "-") for e in engines]])

    q1, q2, q3 = "How stable are taxonomy and data?", "How many labelled examples per category?", "Who owns it, what does retraining cost?"
    bt = results.get("backtest")
    if bt:
        decay = unc.get("decay") or {}
        for name in ("never", "monthly", "drift"):
            vals = {}
            for e, body in bt["engines"].items():
                pol = body["policies"].get(name)
                if pol is None:
                    continue
                extra = "" if name == "never" else f"; {pol['n_retrains']} retrains, {secs(pol['train_seconds'])} training"
                vals[e] = f"{_slope_cell(decay.get(e, {}).get(name))}; mean {cell(pol['mean_accuracy'], pol.get('n'))}{extra}"
            label = {"never": "accuracy change per month, never retrained",
                     "monthly": "retrained monthly", "drift": "retrained on label-free drift"}[name]
            row(q1, label, vals)
    else:
        row(q1, "not measured (no dates)", {})
    curves = results["learning_curve"]["curves"]
    row(q2, "accuracy with all examples", {e: cell(p["accuracy"], p["n_test"]) for e in engines
                                           for p in curves.get(e, []) if p["k"] == "all"})
    ceil = (results.get("ceiling") or {}).get("engines") or {}
    if ceil:
        row(q2, "distance to the accuracy ceiling (text that determines the category; generated data)",
            {e: f"{100 * c['distance']:.1f} pts below {pct(c['ceiling'])}; {cell(c['accuracy_determined']['value'], c['accuracy_determined']['n'])} "
                f"on determined records" if c["accuracy_determined"] else f"{100 * c['distance']:.1f} pts below {pct(c['ceiling'])}"
             for e, c in ceil.items()})
    for c in results["learning_curve"]["crossover"]:
        ci = crossover_interval(results, c["trained"], c["retrieval"])
        last = ci["points"][-1] if ci["points"] else None
        text = (f"point estimate k = {c['crossover_k'] or 'never'}; "
                + (f"clearly ahead from k = {ci['ahead_from']}" if ci["ahead_from"] else "clearly ahead at no k"))
        if last is not None:
            text += (f"; at k = {last['k']}: {100 * last['diff']:+.1f} pts [{100 * last['lo']:+.1f} to {100 * last['hi']:+.1f}]"
                     + (f"? (n = {last['n']})" if last["inconclusive"] else ""))
        row(q2, f"crossover: {c['trained']} vs {c['retrieval']}", {c["trained"]: text})
    nc = (results.get("events") or {}).get("new_category")
    if nc:
        vals = {}
        for e, body in nc["engines"].items():
            vals[e] = "; ".join(f"k={p['k']}: {cell(p['recall_new'], p.get('n_new'))}" for p in body["points"] if p["k"])
        row(q2, f"recall of new category {nc['category']} after k examples" + ("" if any(nc["engines"]) else ""), vals)
    cs = results.get("cost_speed")
    ev = results.get("events") or {}
    if cs:
        vals = {}
        for e in engines:
            fam = next((x["family"] for x in results["engines"] if x["label"] == e), "")
            nc_pts = (nc or {}).get("engines", {}).get(e, {}).get("points", [])
            upd = nc_pts[-1]["update_seconds"] if nc_pts else None
            merge = (ev.get("merge") or {}).get("engines", {}).get(e)
            if fam == "retrieval":
                vals[e] = "immediate: add examples" + (f" ({secs(upd)})" if upd is not None else "")
            else:
                refit = merge["refit_seconds"] if merge else upd
                vals[e] = "a retrain" + (f" ({secs(refit)} here)" if refit is not None else "") + "; mapping outputs covers merges/renames at once"
        row(q3, "time to adapt to a taxonomy edit", vals)
        row(q3, "retraining: wall time (full data, this machine) and compute", {
            e: f"{secs(sp['train_seconds_full'])}, {money(sp.get('retrain_compute_usd', 0.0))}" for e, sp in cs["speed"].items()})
        by_name = {m["approach"]: m for m in cs["cost_models"]}
        vals = {}
        for e in engines:
            m = by_name.get(f"{e} (self-hosted)")
            if m:
                vals[e] = money(m["fixed_per_month"] + m["per_item"] * vol)
        row(q3, f"monthly cost at {vol:,} items (self-hosted)", vals)
        api = next((m for m in cs["cost_models"] if m["approach"].startswith("hosted LLM")), None)
        if api:
            vals = {}
            for e in engines:
                pair = next((p for p in cs["break_even"] if {p["a"], p["b"]} == {f"{e} (self-hosted)", api["approach"]}), None)
                vals[e] = f"{volume(pair['volume'])}/month" if pair else "none (one is cheaper at every volume)"
            row(q3, f"break-even vs {api['approach']}, {money(api['fixed_per_month'] + api['per_item'] * vol)}/month at {vol:,} "
                    f"(priced, accuracy not measured)", vals)
    for m in results.get("llm_measured") or []:
        rows.append(["measured LLM", f"{m['engine']}: accuracy {cell(m['accuracy'], m['n'])} on a stratified sample of {m['n']} "
                     f"({m['categories']} categories); p50 {_ms(m['latency_p50_ms'])}; {money(m['cost_per_1000'])} per 1,000; "
                     f"{money(m['monthly_cost'])}/month at {vol:,}", *["" for _ in engines]])
    review = unc.get("review") or {}
    if review:
        target = next(iter(review.values()))["target"]
        row(q3, f"share left to people for {pct(target)} accuracy on answered (threshold chosen on one half of the test "
                f"records, applied to the other); accuracy reached on the answered",
            {e: f"{cell(r['value'], r['n'])}; {cell(r['answered_accuracy']['value'], r['answered_accuracy']['n'])}"
             for e, r in review.items()})
    return ["question", "figure", *engines], rows


# ----- rendering ---------------------------------------------------------------------------
def _curve_charts(results: dict[str, Any]) -> list[str]:
    lc = results["learning_curve"]
    charts = []
    for metric, name in (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1")):
        series = []
        for e, points in lc["curves"].items():
            series.append(Series(e, [p["k_value"] for p in points], [p[metric] for p in points]))
        ticks = sorted({(p["k_value"], p["k"]) for ps in lc["curves"].values() for p in ps})
        charts.append(line_chart(series, title=f"{name} by labelled examples per category", x_label="examples per category (log)",
                                 y_label=name.lower(), x_log=True, y_range=(0, 1), x_ticks=_thin_ticks(ticks)))
    return charts


def _thin_ticks(ticks: list[tuple[float, str]]) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for v, label in ticks:
        if out and math.log10(max(v, 1e-9)) - math.log10(max(out[-1][0], 1e-9)) < 0.12:
            continue
        out.append((v, label))
    return out


def _backtest_chart(results: dict[str, Any]) -> str:
    bt = results["backtest"]
    series = []
    for e, body in bt["engines"].items():
        for name, pol in body["policies"].items():
            xs = [bt["train_months"][1]] + [m["month"] for m in pol["months"]]
            ys = [body["reference_accuracy"]] + [m["accuracy"] for m in pol["months"]]
            series.append(Series(f"{e} {name}", xs, ys, dashed=name != "never"))
    months = [bt["train_months"][1], *bt["months"]]
    ticks = [(m, "≤%d" % m if i == 0 else str(m)) for i, m in enumerate(months) if i == 0 or len(months) < 14 or m % 2 == 0]
    return line_chart(series, title="Accuracy by month after training (training period held-out at left)", x_label="month",
                      y_label="accuracy", x_ticks=ticks, markers=[Marker(bt["train_months"][1] + 0.5, "training ends")])


def _cost_chart(results: dict[str, Any]) -> str:
    cs = results["cost_speed"]
    vols = [10 ** (e / 4) for e in range(8, 29)]
    short = {m["approach"]: m["approach"].replace(" (self-hosted)", "").split(" (")[0] if m["approach"].startswith("hosted") else m["approach"].replace(" (self-hosted)", "")
             for m in cs["cost_models"]}
    series = [Series(short[m["approach"]], vols, [m["fixed_per_month"] + m["per_item"] * v for v in vols], markers=False) for m in cs["cost_models"]]
    # One marker: the most accurate trained engine against the hosted LLM (the others are in the table).
    trained, _ = _families(results)
    best = _best(results["learning_curve"]["curves"], trained)
    markers = [Marker(p["volume"], f"{volume(p['volume'])}/month") for p in cs["break_even"]
               if best and 1e2 <= p["volume"] <= 1e7 and any(x.startswith("hosted LLM") for x in (p["a"], p["b"]))
               and any(x.startswith(f"{best[0]} ") for x in (p["a"], p["b"]))]
    return line_chart(series, title="Monthly cost by volume (break-even with the hosted LLM marked)", x_label="items per month (log)",
                      y_label="US$ per month (log)", x_log=True, y_log=True, markers=markers)


def _timeline_chart(results: dict[str, Any]) -> str:
    nc = results["events"]["new_category"]
    series = []
    days = [0, 1, 2, 5, 10, 15, 20, 25, 29, 30, 31, 35, 45, 60]
    for e, body in nc["engines"].items():
        k0, last = body["points"][0], body["points"][-1]
        if body["family"] == "retrieval":
            ys = [last["recall_new"] for _ in days]
        else:
            # Under a monthly retraining cadence the new category waits for the next retrain (day 30 at worst).
            ys = [k0["recall_new"] if d < 30 else last["recall_new"] for d in days]
        series.append(Series(e, days, ys, step=True, markers=False))
    return line_chart(series, title=f"Recall on new category {nc['category']} after it is introduced ({nc['engines'][next(iter(nc['engines']))]['points'][-1]['k']} examples)",
                      x_label="days after introduction (monthly retraining)", y_label="recall", y_range=(0, 1))


def _new_category_chart(results: dict[str, Any]) -> str:
    nc = results["events"]["new_category"]
    series = [Series(e, [max(p["k"], 0.5) for p in body["points"]], [p["recall_new"] for p in body["points"]])
              for e, body in nc["engines"].items()]
    ticks = sorted({(max(p["k"], 0.5), str(p["k"])) for b in nc["engines"].values() for p in b["points"]})
    return line_chart(series, title=f"Recall on {nc['category']} by examples given (0 = before; trained engines after retraining)",
                      x_label="examples of the new category (log)", y_label="recall", x_log=True, y_range=(0, 1), x_ticks=ticks)


def _reliability_chart(results: dict[str, Any]) -> str:
    series = []
    for e, body in results["calibration"].items():
        bins = [b for b in body["bins"] if b["n"]]
        series.append(Series(f"{e} (ECE {body['ece']:.3f})", [b["confidence"] for b in bins], [b["accuracy"] for b in bins]))
    return line_chart(series, title="Reliability: accuracy by confidence (diagonal = calibrated)", x_label="mean confidence in bin",
                      y_label="accuracy", y_range=(0, 1), diagonal=True)


def _table(headers: list[str], rows: list[list[str]]) -> tuple[str, str]:
    html = "<table><thead><tr>" + "".join(f"<th scope='col'>{escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"
    html += "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>"
    md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n" + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)
    return html, md


def _sections(results: dict[str, Any]) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    """(title, svg charts, [(html table, md table)]) per section, in report order."""
    out = []
    lc = results["learning_curve"]
    rows = [[e] + [next((cell(p["accuracy"], p["n_test"]) for p in pts_ if p["k"] == k), "-") for k in lc["ks"]] for e, pts_ in lc["curves"].items()]
    out.append(("1. Learning curves", _curve_charts(results), [_table(["engine"] + [f"k={k}" for k in lc["ks"]], rows)]))
    if results.get("backtest"):
        bt = results["backtest"]
        rows = []
        decay = (results.get("uncertainty") or {}).get("decay") or {}
        for e, body in bt["engines"].items():
            for name, pol in body["policies"].items():
                rows.append([e, name, cell(body["reference_accuracy"], body.get("reference_n")), cell(pol["mean_accuracy"], pol.get("n")),
                             cell(pol["final_accuracy"], pol["months"][-1].get("n")), _slope_cell(decay.get(e, {}).get(name)),
                             pol["n_retrains"], secs(pol["train_seconds"])])
        out.append(("2. Accuracy by month", [_backtest_chart(results)],
                    [_table(["engine", "policy", "training period", f"mean months {bt['months'][0]}-{bt['months'][-1]}", "last month",
                             "change per month", "retrains", "training time"], rows)]))
    ev = results.get("events") or {}
    charts, tables = [], []
    if ev.get("new_category"):
        charts += [_new_category_chart(results), _timeline_chart(results)]
        nc = ev["new_category"]
        rows = [[e, p["k"], cell(p["recall_new"], p.get("n_new")), cell(p["accuracy_all"], p.get("n_all")), secs(p["update_seconds"])]
                for e, b in nc["engines"].items() for p in b["points"]]
        tables.append(_table(["engine", f"examples of {nc['category']}", f"recall on {nc['category']}", "accuracy (all records)", "fit/update time"], rows))
    if ev.get("merge"):
        mg = ev["merge"]
        rows = [[e, cell(b["before"], b.get("n")), cell(b["mapped"], b.get("n")), cell(b["refit"], b.get("n_refit")), secs(b["refit_seconds"])]
                for e, b in mg["engines"].items()]
        tables.append(_table(["engine", "before merge", f"{'+'.join(mg['sources'])} mapped", "refitted", "refit time"], rows))
    if ev.get("network"):
        nw = ev["network"]
        rows = [[e, cell(b["as_is"], b.get("n")), cell(b["with_history"], b.get("n")), b["n_history"]] for e, b in nw["engines"].items()]
        tables.append(_table(["engine", f"{nw['network']} as is", "with their mapped history", "their records added"], rows))
    if charts or tables:
        out.append(("3. Adaptation to taxonomy changes", charts, tables))
    cs = results.get("cost_speed")
    if cs:
        rows = [[e, f"{s['latency_p50_ms']:.1f}", f"{s['latency_p95_ms']:.1f}", rate(s["throughput_per_s"]), money(s["cost_per_1000"]), secs(s["train_seconds_full"])]
                for e, s in cs["speed"].items()]
        t1 = _table(["engine", "p50 ms", "p95 ms", "items/s", "compute per 1,000", "training (full data)"], rows)
        rows = [[m["approach"] + (" - priced, accuracy not measured" if m["approach"].startswith("hosted LLM") else ""), money(m["per_1000_items"]), money(m["fixed_per_month"]), f"{m['retrains_per_month']:.2f}", "; ".join(m["notes"])] for m in cs["cost_models"]]
        t2 = _table(["approach", "per 1,000 items", "fixed per month", "retrains/month", "assumptions"], rows)
        rows = [[p["a"], p["b"], volume(p["volume"]), p["cheaper_above"]] for p in cs["break_even"]]
        t3 = _table(["approach A", "approach B", "break-even items/month", "cheaper above it"], rows)
        out.append(("4. Cost and speed", [_cost_chart(results)], [t1, t2, t3]))
    if results.get("llm_measured"):
        rows = [[m["engine"], m["n"], cell(m["accuracy"], m["n"]), pct(m["coverage"]), _ms(m["latency_p50_ms"]), _ms(m["latency_p95_ms"]),
                 f"{m['tokens_per_call']['input']:.0f} / {m['tokens_per_call']['output']:.0f}", money(m["cost_per_1000"]), m["cost_source"]]
                for m in results["llm_measured"]]
        out.append(("Measured LLM endpoints", [], [_table(["endpoint", "records (stratified)", "accuracy [95% CI]", "answered", "p50",
                                                           "p95", "tokens in / out per call", "cost per 1,000", "priced from"], rows)]))
    if results.get("calibration"):
        rows = [[e, b["n"], f"{b['ece']:.3f}"] for e, b in results["calibration"].items()]
        out.append(("Calibration", [_reliability_chart(results)], [_table(["engine", "records", "ECE"], rows)]))
    if results.get("confusions"):
        tables = []
        for e, b in results["confusions"].items():
            show = any("texts" in p for p in b["pairs"])
            rows = [[f"{p['true']} {p['true_name']}", f"{p['predicted']} {p['predicted_name']}", p["count"],
                     ", ".join(p.get("record_ids", []))] + ([" | ".join(p.get("texts", []))] if show else []) for p in b["pairs"]]
            tables.append(_table([f"{e}: true", "predicted", "count", "record ids (first 5)"] + (["text (--show-text)"] if show else []), rows))
        out.append(("Top confusions", [], tables[:3]))
        tables = []
        for e, b in results["confusions"].items():
            def pr(x: dict[str, Any] | None) -> str:
                return "-" if x is None else cell(x["value"], x["n"])

            rows = [[f"{c['category']} {c['name']}" if c["name"] != c["category"] else c["category"], c["n"], pr(c["recall"]),
                     c["predicted"], pr(c["precision"])] for c in b.get("per_category", [])]
            if rows:
                tables.append(_table([f"{e}: category", "records", "recall [95% CI]", "predicted", "precision [95% CI]"], rows))
        if tables:
            out.append(("Per-category errors", [], tables))
    if results.get("cascade"):
        out.append(("Cheap first, expensive when unsure", [], [_cascade_table(c) for c in results["cascade"]]))
    if results.get("audit"):
        from .audit_section import audit_section

        out.append(audit_section(results["audit"]))
    return out


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def _measured_sentences(results: dict[str, Any]) -> list[str]:
    out = []
    for m in results.get("llm_measured") or []:
        t = m["tokens_per_call"]
        out.append(f"{m['engine']}, measured on a stratified sample of {m['n']} test records ({m['categories']} categories): accuracy "
                   f"{pci(m['accuracy'], m['n'])}, answered {pct(m['coverage'])}; latency p50 {_ms(m['latency_p50_ms'])}, p95 "
                   f"{_ms(m['latency_p95_ms'])}; {t['input']:.0f} input + {t['output']:.0f} output tokens a call over {m['calls']} calls; "
                   f"{money(m['cost_per_1000'])} per 1,000 records ({m['cost_source']}).")
    return out


def _slope_cell(d: dict[str, Any] | None) -> str:
    if not d or d.get("slope") is None:
        return "-"
    return f"{100 * d['slope']:+.2f} pts [{100 * d['lo']:+.2f} to {100 * d['hi']:+.2f}]" + ("?" if d["inconclusive"] else "")


def _cascade_table(c: dict[str, Any]) -> tuple[str, str]:
    """Per target: the share each stage answers, the share to people, accuracy and cost, then each stage alone."""
    def acc(v: float | None) -> str:
        return pct(v) if v is not None else "-"

    names = c["stages"]
    rows = []
    for t in c["targets"]:
        rows.append([pct(t["target"]), c["engine"], *[pct(t["stage_shares"][nm]) for nm in names], pct(t["to_people"]),
                     acc(t["answered_accuracy"]), f"${t['cost_per_1000']:.4f}"])
        for nm in names:
            a = t["singles"][nm]
            rows.append(["", f"{nm} alone", *[pct(a["coverage"]) if x == nm else "" for x in names], pct(1 - a["coverage"]),
                         acc(a["answered_accuracy"]), f"${a['cost_per_1000']:.4f}"])
    n = c["targets"][0]["n"] if c["targets"] else 0
    return _table(["target", f"engine ({n} records)", *[f"answered by {nm}" for nm in names], "to people",
                   "accuracy on answered", "cost / 1,000"], rows)


def _cascade_sentence(results: dict[str, Any]) -> str | None:
    """At a 95% promise: does the cascade answer more records automatically than its best stage alone?"""
    for c in results.get("cascade") or []:
        t = next((t for t in c["targets"] if abs(t["target"] - 0.95) < 1e-9 and t["n"] >= 50), None)
        if t is None:
            continue
        answered = 1 - t["to_people"]
        best, a = max(t["singles"].items(), key=lambda kv: kv[1]["coverage"])
        if answered > a["coverage"] + 0.005:
            return (f"Cheap first, expensive when unsure: promising 95% accuracy on what is answered, {c['engine']} "
                    f"({' -> '.join(c['stages'])}) answers {pct(answered)} of records automatically against {pct(a['coverage'])} "
                    f"for {best} alone, at ${t['cost_per_1000']:.4f} per 1,000 records.")
    return None


def _fmt_head(item: dict[str, Any]) -> str:
    ci = item.get("ci")
    tail = ""
    if ci and ci[0] is not None:
        if item["format"] == "pct":
            tail = f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%, n = {item['n']:,})"
        else:
            tail = f" (95% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}, n = {item['n']:,})"
        if item.get("inconclusive"):
            tail += " inconclusive"
    if item["format"] == "pct":
        return pct(item["value"]) + tail
    if item["format"] == "pts":
        return f"{100 * item['value']:+.1f} pts" + tail
    if item["format"] == "slope":
        return f"{100 * item['value']:+.2f} pts/month" + tail
    if item["format"] == "volume":
        return volume(item["value"])
    return f"{item['value']:g}"


QUESTIONS = (
    ("examples", "How many examples does each approach need?"),
    ("six_months", "Will it still be accurate in six months?"),
    ("change", "What does change cost?"),
    ("cost", "Cost and speed"),
    ("recommendation", "Recommendation"),
)


LEGEND = (f"Every figure with its 95% interval: value [low-high] (Wilson for shares, paired bootstrap for differences); "
          f"'?' marks a figure on fewer than {U.MIN_N} records: inconclusive, reported but never used to recommend.")


def _setup_lines(results: dict[str, Any]) -> list[str]:
    d = results["dataset"]
    lines = [f"Data: {d['name']} ({d['records']:,} records, {d['categories']} categories"
             + (f", months {d['months'][0]}-{d['months'][1]}" if d["dated"] else ", undated") + f"); taxonomy {results['taxonomy']['name']} {results['taxonomy']['version']}."]
    for e in results["engines"]:
        caps = []
        if e["max_train"]:
            caps.append(f"trained on at most {e['max_train']:,} records")
        if e["max_test"]:
            caps.append(f"scored on the first {e['max_test']:,} records of each test set")
        if e["seeds"]:
            caps.append(f"{e['seeds']} seed(s)")
        lines.append(f"Engine {e['label']} ({e['family']}, {e['name']}): " + ("; ".join(caps) if caps else "full data") + ".")
    for s in results["skipped"]:
        lines.append(f"Skipped {s['experiment']}" + (f" ({s['engine']} {s['cell']})" if s["engine"] != "all" else "") + f": {s['reason']}.")
    lines += results.get("notes", [])
    t = results.get("timings", {})
    if t:
        lines.append("Time: " + ", ".join(f"{k} {secs(v)}" for k, v in t.items()) + ".")
    return lines


def _answer_html(text: str) -> str:
    out, items = [], []
    for line in text.splitlines():
        if line.startswith("  "):
            items.append(f"<li>{escape(line.strip())}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        out.append(f"<p>{escape(line)}</p>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    return "".join(out)


def render_html(results: dict[str, Any]) -> str:
    a = results["answers"]
    body = [f"<h1>taxonomist comparison: {escape(results['dataset']['name'])}</h1>",
            f"<p class='meta'>{escape(results['created'])} · {results['machine']['cpus']} CPU cores · results.json schema {results['schema']}</p>"]
    headers, rows = first_screen(results)
    html, _ = _table(headers, rows)
    body.append(f"<h2>The three questions</h2><p class='meta'>{escape(LEGEND)}</p>{html}")
    body.append("<h2>Recommendation</h2>" + _answer_html(a.get("recommendation", "")))
    body.append("<h2>Details</h2>")
    for key, q in QUESTIONS:
        if key != "recommendation":
            body.append(f"<h3>{escape(q)}</h3>" + _answer_html(a.get(key, "")))
    body.append("<h2>Headline numbers</h2>")
    html, _ = _table(["figure", "value", "from"], [[h["label"], _fmt_head(h), f"{len(h['runs'])} stored run(s)" if h.get("runs") else "cost model"] for h in results["headline"]])
    body.append(html)
    for title, charts, tables in _sections(results):
        body.append(f"<h2>{escape(title)}</h2>")
        body += [f"<div class='fig'>{c}</div>" for c in charts]
        body += [t for t, _ in tables]
    body.append("<h2>Set-up</h2><ul>" + "".join(f"<li>{escape(x)}</li>" for x in _setup_lines(results)) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}"
             "table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left}"
             "th{background:#f4f4f4}.fig{margin:1em 0}.meta{color:#777}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>taxonomist comparison</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def render_markdown(results: dict[str, Any]) -> str:
    a = results["answers"]
    lines = [f"# taxonomist comparison: {results['dataset']['name']}", "", f"{results['created']} · figures in report.html", ""]
    headers, rows = first_screen(results)
    lines += ["## The three questions", "", LEGEND, "", _table(headers, rows)[1], "## Recommendation", "", a.get("recommendation", ""), "",
              "## Details", ""]
    for key, q in QUESTIONS:
        if key != "recommendation":
            lines += [f"### {q}", ""] + [f"- {x.strip()}" if x.startswith("  ") else x for x in a.get(key, "").splitlines()] + [""]
    lines += ["## Headline numbers", ""]
    _, md = _table(["figure", "value"], [[h["label"], _fmt_head(h)] for h in results["headline"]])
    lines += [md]
    for title, _, tables in _sections(results):
        lines += [f"## {title}", ""] + [t for _, t in tables]
    lines += ["## Set-up", ""] + [f"- {x}" for x in _setup_lines(results)] + [""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    (out / "report.html").write_text(render_html(results), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(results), encoding="utf-8")
    return out / "report.html"
