"""Abstention-threshold rules compared offline on operational_core's random splits, without refitting per rule.

    python benchmarks/threshold_rules.py cache --seeds 7 11 5 --splits 10      # fits once, ~40-80 s a split
    python benchmarks/threshold_rules.py compare --seeds 7 11 5 --splits 10 [--rules ...] [--json ...]
    python benchmarks/threshold_rules.py compare --seeds 7 11 5 --splits 10 --simulate 300 [--rules ...]

`cache` runs operational_core's random 80/20 splits of months 1-12 (same generated data, same splits, same
`service.train` with `--target-accuracy`) and keeps, per split, what a threshold rule sees and what it is judged
on: the calibrated confidence and correctness of every cross-fitted held-out row of the training part, and of
every test row under the final model (no text: confidences and booleans only, under runs/threshold_cache/).
`compare` applies each rule to the held-out rows and scores the chosen threshold on the test rows: splits whose
accuracy on answered is >= the target, splits answering nothing, pooled accuracy on answered, mean coverage.
"choose_threshold" is whatever the project does now; "old_scan" the rule before the gate (its rows match
operational_core_splits_seed{7,11}.json of commit 39a417e exactly). `--simulate R` instead pools each seed's
held-out rows as a population and draws R held-out/test samples of the benchmark's sizes from it: P(true<t) is
how often the chosen threshold's accuracy over the whole pool is below the target (what a rule's guarantee
bounds), P(test>=t) how often the test sample's is not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from taxonomist.engines import calibration  # noqa: E402
from taxonomist.engines.calibration import choose_threshold, wilson_interval  # noqa: E402

CACHE = ROOT / "runs" / "threshold_cache"


def _machine():
    from _machine import machine

    return machine()


def cache(seeds: list[int], splits: int, records: int, target: float, engine: str) -> None:
    from operational_core import generated_store, random_split

    from taxonomist import service
    from taxonomist.store import Store

    CACHE.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        work = Path(tempfile.mkdtemp(prefix="thrules-"))
        tax, year_end = generated_store(work, seed, records)
        with Store.open(work / "d.db") as store:
            history = service.store_records(store, until=year_end)
        for r in range(splits):
            path = CACHE / f"{engine}_seed{seed}_r{records}_split{r}.npz"
            if path.exists():
                continue
            t0 = time.perf_counter()
            train_part, test_part = random_split(history, seed, r)
            seen: dict[str, object] = {}
            original = calibration.calibrate_from_proba

            def spy(engine_, raw, labels, **kw):
                seen["raw"], seen["labels"] = np.asarray(raw, dtype=float), list(labels)
                return original(engine_, raw, labels, **kw)

            calibration.calibrate_from_proba = spy
            try:
                trained = service.train(engine, train_part, out=work / f"m{r}", taxonomy=tax, target_accuracy=target)
            finally:
                calibration.calibrate_from_proba = original
            model = service.load_model(work / f"m{r}").engine
            cal = model.calibrator_
            index = {c: i for i, c in enumerate(model.classes_)}
            y = np.array([index.get(v, -1) for v in seen["labels"]])
            proba = cal.apply(seen["raw"][y >= 0])
            y = y[y >= 0]
            test_proba = model.predict_proba([t.text for t in test_part])  # calibrated, as predict_batch sees it
            y_test = np.array([index.get(t.label, -1) for t in test_part])
            np.savez_compressed(
                path, held_conf=proba.max(axis=1), held_ok=proba.argmax(axis=1) == y,
                test_conf=test_proba.max(axis=1), test_ok=test_proba.argmax(axis=1) == y_test,
                threshold=np.array(trained.calibration.get("threshold") or np.nan),
            )
            print(f"seed {seed} split {r}: {len(y)} held-out, {len(y_test)} test, "
                  f"threshold {trained.calibration.get('threshold')}, {time.perf_counter() - t0:.0f} s", flush=True)


def load(seeds: list[int], splits: int, records: int, engine: str) -> dict[int, list[dict[str, np.ndarray]]]:
    out = {}
    for seed in seeds:
        out[seed] = [dict(np.load(CACHE / f"{engine}_seed{seed}_r{records}_split{r}.npz")) for r in range(splits)]
    return out


def score(rule, data: dict[int, list[dict[str, np.ndarray]]], target: float) -> dict[int, dict]:
    """Per seed: the rule's threshold on each split's held-out rows, judged on that split's test rows."""
    result = {}
    for seed, parts in data.items():
        rows = []
        for p in parts:
            t = rule(p["held_conf"], p["held_ok"], target)
            answered = p["test_conf"] >= t if t is not None else np.zeros(len(p["test_conf"]), dtype=bool)
            k, right = int(answered.sum()), int(p["test_ok"][answered].sum())
            held = p["held_conf"] >= t if t is not None else np.zeros(len(p["held_conf"]), dtype=bool)
            rows.append({"threshold": t, "answered": k, "right": right, "coverage": k / len(answered),
                         "accuracy": right / k if k else None, "heldout_coverage": float(held.mean())})
        k = sum(r["answered"] for r in rows)
        right = sum(r["right"] for r in rows)
        lo, hi = wilson_interval(right, k) if k else (0.0, 0.0)
        result[seed] = {
            "met_target": sum((r["accuracy"] or 0.0) >= target for r in rows),
            "answer_nothing": sum(r["answered"] == 0 for r in rows),
            "pooled_answered_accuracy": right / k if k else None, "pooled_ci95": [float(lo), float(hi)],
            "mean_coverage": float(np.mean([r["coverage"] for r in rows])), "splits": rows,
        }
    return result


def simulate(rule, data: dict[int, list[dict[str, np.ndarray]]], target: float, reps: int) -> dict[int, dict]:
    """Per seed: the held-out rows of all its splits pooled as a population; `reps` times draw a held-out sample
    and a test sample of the benchmark's sizes from it, choose a threshold on the first, score it on the second
    and on the whole pool (the "true" accuracy on answered, which the rule's guarantee is about)."""
    result = {}
    for seed, parts in data.items():
        conf = np.concatenate([p["held_conf"] for p in parts])
        ok = np.concatenate([p["held_ok"] for p in parts])
        n, m = len(parts[0]["held_conf"]), len(parts[0]["test_conf"])
        rng = np.random.default_rng(seed)
        true_below = test_met = nothing = 0
        cov, true_acc = [], []
        for _ in range(reps):
            draw = rng.permutation(len(conf))[: n + m]
            h, t = draw[:n], draw[n:]
            thr = rule(conf[h], ok[h], target)
            if thr is None:
                nothing += 1
                cov.append(0.0)
                continue
            true_acc.append(ok[conf >= thr].mean())
            true_below += true_acc[-1] < target
            answered = conf[t] >= thr
            test_met += answered.any() and ok[t][answered].mean() >= target
            cov.append(answered.mean())
        result[seed] = {"reps": reps, "true_below": true_below / reps, "test_met": test_met / reps,
                        "nothing": nothing / reps, "mean_coverage": float(np.mean(cov)),
                        "mean_true_accuracy": float(np.mean(true_acc)) if true_acc else float("nan")}
    return result


def current(conf, ok, target):
    return choose_threshold(conf, ok, min_accuracy=target, confidence_level=0.95)


# ----- candidate rules (delta = 0.05 throughout) -----------------------------------------------------------
Z = 1.6448536269514722  # one-sided 95%, uncorrected


def _curve(conf, ok):
    """Sorted confidences, cut ends (tie boundaries), answered counts and hits at each cut."""
    order = np.argsort(-conf, kind="stable")
    sc = conf[order]
    cuts = np.flatnonzero(np.r_[sc[1:] < sc[:-1], True])
    hits = np.cumsum(ok[order])[cuts]
    return sc, cuts, cuts + 1, hits


def _lb(h, k, z=Z):
    return wilson_interval(h, k, z)[0]


def grid_cuts(kept, n, grid):
    """Indices into `kept` of the cuts nearest below coverages 1/grid, 2/grid, ... (all cuts when grid is None)."""
    if grid is None:
        return np.arange(len(kept))
    idx = np.searchsorted(kept, np.arange(1, grid + 1) * n / grid, side="right") - 1
    return np.unique(idx[idx >= 0])


def fst_top(grid=None, start="top"):
    """Fixed-sequence testing from the surest threshold down at the uncorrected level, stop at the first failure."""
    def rule(conf, ok, target):
        sc, cuts, kept, hits = _curve(conf, ok)
        idx = grid_cuts(kept, len(conf), grid)
        if start == "perfect":  # first cut where an all-correct prefix would clear the bound
            idx = idx[_lb(kept[idx], kept[idx]) >= target]
        elif start == "halfway":  # first cut where accuracy halfway between target and 1 would clear it
            p = (1 + target) / 2
            idx = idx[_lb(p * kept[idx], kept[idx]) >= target]
        best = None
        for i in idx:
            if _lb(hits[i], kept[i]) < target:
                break
            best = i
        return None if best is None else float(sc[cuts[best]])
    return rule


def split_ltt(grid=None, z_a=Z, order="evidence"):
    """Interleave the rows by confidence rank into halves A and B; order candidate cuts on A, test them on B in
    that order at the uncorrected level, stop at the first failure; answer at the lowest threshold that passed."""
    def rule(conf, ok, target):
        order_ = np.argsort(-conf, kind="stable")
        a = np.zeros(len(conf), dtype=bool)
        a[order_[::2]] = True
        sc, cuts, kept, hits = _curve(conf, ok)
        thresholds = sc[cuts]
        conf_a, ok_a, conf_b, ok_b = conf[a], ok[a], conf[~a], ok[~a]
        def counts(c, o):
            srt = np.sort(c)[::-1]
            o_s = np.cumsum(o[np.argsort(-c, kind="stable")])
            k = np.searchsorted(-srt, -thresholds, side="right")
            h = np.where(k > 0, o_s[np.maximum(k - 1, 0)], 0)
            return k, h
        ka, ha = counts(conf_a, ok_a)
        kb, hb = counts(conf_b, ok_b)
        idx = grid_cuts(kept, len(conf), grid)
        idx = idx[(ka[idx] > 0) & (kb[idx] > 0)]
        if order == "evidence":
            ev = _lb(ha[idx], ka[idx], z_a) if z_a else ha[idx] / ka[idx]
            seq = idx[np.argsort(-ev, kind="stable")]
            seq = [i for i in seq if (_lb(ha[i], ka[i], z_a) if z_a else ha[i] / ka[i]) >= target]
        else:  # "coverage": A picks the largest cut clearing the bound, B tests it and then those above it
            passing = idx[(_lb(ha[idx], ka[idx], z_a) if z_a else ha[idx] / ka[idx]) >= target]
            seq = list(passing[::-1])
        chosen = []
        for i in seq:
            if _lb(hb[i], kb[i]) < target:
                break
            chosen.append(i)
        return None if not chosen else float(thresholds[max(chosen)])
    return rule


def batch_bound(m_share=1.0, tests="log2"):
    """Largest cut whose lower bound on the accuracy of a future batch (m = m_share x answered rows) clears it."""
    from scipy.stats import norm

    def rule(conf, ok, target):
        sc, cuts, kept, hits = _curve(conf, ok)
        n_tests = max(1, int(np.ceil(np.log2(len(cuts))))) if tests == "log2" else 1
        z = float(norm.ppf(1 - 0.05 / n_tests))
        p = hits / kept
        m = m_share * kept
        lb = p - z * np.sqrt(np.maximum(p * (1 - p), target * (1 - target)) * (1 / kept + 1 / m))
        passing = np.flatnonzero(lb >= target)
        return None if not len(passing) else float(sc[cuts[passing[-1]]])
    return rule


def fst_predicted(m_share=None, z=Z, start_by="evidence", z_start=None, first_population=False):
    """Fixed-sequence testing upward in coverage from a start the correctness of the rows does not choose: the cut
    where the calibrated confidences themselves predict the most evidence that the target is met (their mean is
    the accuracy calibration expects). Stop at the first failure. With `m_share`, the bound is on the accuracy of
    a future batch of m = m_share x answered rows (a prediction bound), not on the population's."""
    def rule(conf, ok, target):
        order_ = np.argsort(-conf, kind="stable")
        sc, cuts, kept, hits = _curve(conf, ok)
        expected = np.cumsum(conf[order_])[cuts] / kept
        if start_by == "evidence":
            ev = (expected - target) * np.sqrt(kept / np.maximum(expected * (1 - expected), 1e-12))
            start = int(np.argmax(ev))
        elif start_by == "oracle":  # NOT valid: the start looks at the correctness (an upper bound on a good start)
            start = int(np.argmax(_lb(hits, kept, z_start or z)))
        best = None
        for i in range(start, len(cuts)):
            p = hits[i] / kept[i]
            if m_share is None or (first_population and i == start):
                lb = _lb(hits[i], kept[i], z)
            else:
                var = max(p * (1 - p), target * (1 - target))
                lb = p - z * np.sqrt(var * (1 / kept[i] + 1 / (m_share * kept[i])))
            if lb < target:
                break
            best = i
        return None if best is None else float(sc[cuts[best]])
    return rule


def split_fst(z_a=Z, m_share=None, grid=None, every=2):
    """Interleave rows by confidence rank into halves A and B. A chooses the start: the cut with the most evidence
    (highest lower bound at z_a) on A. B tests upward in coverage from there (fixed sequence, uncorrected level),
    stopping at the first failure; answer at the lowest threshold B passed."""
    def rule(conf, ok, target):
        order_ = np.argsort(-conf, kind="stable")
        a = np.zeros(len(conf), dtype=bool)
        a[order_[::every]] = True
        sc, cuts, kept, hits = _curve(conf, ok)
        thresholds = sc[cuts]

        def counts(c, o):
            srt = np.sort(c)[::-1]
            o_s = np.cumsum(o[np.argsort(-c, kind="stable")])
            k = np.searchsorted(-srt, -thresholds, side="right")
            return k, np.where(k > 0, o_s[np.maximum(k - 1, 0)], 0)

        ka, ha = counts(conf[a], ok[a])
        kb, hb = counts(conf[~a], ok[~a])
        idx = grid_cuts(kept, len(conf), grid)
        idx = idx[(ka[idx] > 0) & (kb[idx] > 0)]
        if m_share is None:
            ev = _lb(ha[idx], ka[idx], z_a)
        else:
            pa = ha[idx] / ka[idx]
            ev = pa - z_a * np.sqrt(np.maximum(pa * (1 - pa), target * (1 - target)) * (1 / ka[idx] + 1 / (m_share * ka[idx])))
        start = int(np.argmax(ev))
        best = None
        for i in idx[start:]:
            if m_share is None:
                lb = _lb(hb[i], kb[i])
            else:
                pb = hb[i] / kb[i]
                lb = pb - Z * np.sqrt(max(pb * (1 - pb), target * (1 - target)) * (1 / kb[i] + 1 / (m_share * kb[i])))
            if lb < target:
                break
            best = i
        return None if best is None else float(thresholds[best])
    return rule


def hybrid(first, then):
    """`first`'s threshold when it answers anything, else `then`'s."""
    def rule(conf, ok, target):
        t = first(conf, ok, target)
        return t if t is not None else then(conf, ok, target)
    return rule


def gate_then_scan(then="scan", null_variance=False, predicted_bound=False, power=False, room=False):
    """Serial gatekeeping: the start (as fst_predicted: chosen from the calibrated confidences alone) must clear the
    bound at the uncorrected level; if it does, the largest cut above it clearing the search-corrected bound (the
    old scan, over the cuts above the start), else the start itself."""
    from scipy.stats import norm

    def rule(conf, ok, target):
        order_ = np.argsort(-conf, kind="stable")
        sc, cuts, kept, hits = _curve(conf, ok)
        expected = np.cumsum(conf[order_])[cuts] / kept
        if room:  # the most room for the confidences to be too high: mean - z sqrt(t (1 - t) / k)
            ev = expected - Z * np.sqrt(target * (1 - target) / kept)
        elif power:  # the gate's power if the answered were as accurate as their confidences say
            ev = ((expected - target) * np.sqrt(kept) - Z * np.sqrt(target * (1 - target))) / np.sqrt(
                np.maximum(expected * (1 - expected), 1e-12))
        elif predicted_bound:  # the highest Wilson bound if the answered were as accurate as their confidences say
            ev = _lb(expected * kept, kept)
        elif null_variance:  # the score statistic under the null: argmax of (expected - target) sqrt(kept)
            ev = (expected - target) * np.sqrt(kept)
        else:
            ev = (expected - target) * np.sqrt(kept / np.maximum(expected * (1 - expected), 1e-12))
        start = int(np.argmax(ev))
        if _lb(hits[start], kept[start]) < target:
            return None
        above = np.arange(start + 1, len(cuts))
        best = start
        if len(above) and then == "scan":
            z = float(norm.ppf(1 - 0.05 / max(1, int(np.ceil(np.log2(len(above)))))))
            passing = above[_lb(hits[above], kept[above], z) >= target]
            if len(passing):
                best = int(passing[-1])
        return float(sc[cuts[best]])
    return rule


def old_scan(conf, ok, target):
    """The rule before the gate (commit 39a417e): the largest cut clearing the search-corrected Wilson bound."""
    from scipy.stats import norm

    sc, cuts, kept, hits = _curve(conf, ok)
    tests = max(1, int(np.ceil(np.log2(len(cuts)))))
    passing = np.flatnonzero(_lb(hits, kept, float(norm.ppf(1 - 0.05 / tests))) >= target)
    return float(sc[cuts[passing[-1]]]) if len(passing) else None


RULES = {
    # what the project does now, and before
    "choose_threshold": current,  # gate (start: most room, `_gate_start`) then the search above it, every threshold counted
    "old_scan": old_scan,
    # fixed-sequence testing from the surest threshold down, uncorrected (Learn then Test)
    "fst_all_cuts": fst_top(),
    "fst_from_all_correct_could_pass": fst_top(start="perfect"),
    "fst_from_halfway_could_pass": fst_top(start="halfway"),
    "fst_grid20": fst_top(grid=20),
    "fst_grid100_from_halfway": fst_top(grid=100, start="halfway"),
    # fixed sequence upward from a start the confidences choose
    "fst_up_from_evidence_start": fst_predicted(),
    "fst_up_from_evidence_start_z1.96": fst_predicted(z=1.959963984540054),
    "fst_up_batch_bound": fst_predicted(m_share=1.0),  # future batch as large as the held-out answered
    "fst_up_batch_bound_quarter": fst_predicted(m_share=0.25),  # ... a quarter as large (the test split)
    "fst_up_batch_then_population": hybrid(fst_predicted(m_share=1.0), fst_predicted()),
    "fst_up_population_start_then_batch": fst_predicted(m_share=1.0, first_population=True),
    # halves (or a fifth/tenth) of the held-out rows: one chooses, the other tests
    "split_order_by_a_evidence": split_ltt(),
    "split_order_by_a_evidence_grid20": split_ltt(grid=20),
    "split_a_picks_b_tests_upward": split_ltt(grid=20, order="coverage"),
    "split_fst_from_a_start": split_fst(),
    "split5_fst_from_a_start": split_fst(every=5),
    "split10_fst_from_a_start": split_fst(every=10),
    "split_fst_batch_bound": split_fst(m_share=1.0),
    # a bound on a future batch's accuracy, searched with the old correction
    "scan_batch_bound": batch_bound(1.0),
    # gate then search, other starts
    "gate_evidence_start_then_scan": gate_then_scan(),
    "gate_power_start_then_scan": gate_then_scan(power=True),
    "gate_room_start_then_scan": gate_then_scan(room=True),  # choose_threshold until 2026-12-02 (log2 m search)
    "gate_predicted_bound_start_then_scan": gate_then_scan(predicted_bound=True),
    "gate_score_start_then_scan": gate_then_scan(null_variance=True),
    "gate_room_start_only": gate_then_scan(then=None, room=True),
    # NOT valid (the start looks at correctness): how much a perfect start would add
    "invalid_best_start_fst": fst_predicted(start_by="oracle"),
    "invalid_best_start_fst_z1.96": fst_predicted(start_by="oracle", z=1.959963984540054),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("cache", "compare"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--engine", default="tfidf")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rules", nargs="*", default=None, help="only these rules (default: all)")
    ap.add_argument("--simulate", type=int, default=0,
                    help="instead: REPS held-out/test draws from each seed's pooled held-out rows (see `simulate`)")
    args = ap.parse_args()
    if args.mode == "cache":
        cache(args.seeds, args.splits, args.records, args.target, args.engine)
        return
    data = load(args.seeds, args.splits, args.records, args.engine)
    if args.simulate:
        sims = {}
        print(f"{'rule':38} {'seed':>4} {'P(true<t)':>9} {'P(test>=t)':>10} {'P(none)':>8} {'mean cov':>8} {'true acc':>8}")
        for name, rule in RULES.items():
            if args.rules and name not in args.rules:
                continue
            sims[name] = simulate(rule, data, args.target, args.simulate)
            for seed, s in sims[name].items():
                print(f"{name:38} {seed:4} {s['true_below']:9.3f} {s['test_met']:10.3f} {s['nothing']:8.3f} "
                      f"{s['mean_coverage']:8.4f} {s['mean_true_accuracy']:8.4f}")
        if args.json:
            args.json.write_text(json.dumps({"simulated": sims, "machine": _machine()}, indent=2) + "\n")
        return
    table = {name: score(rule, data, args.target) for name, rule in RULES.items() if not args.rules or name in args.rules}
    print(f"{'rule':38} {'seed':>4} {'met':>5} {'none':>5} {'pooled acc (95% CI)':>24} {'mean cov':>8}  per-split test acc")
    for name, per_seed in table.items():
        for seed, s in per_seed.items():
            acc = s["pooled_answered_accuracy"]
            pooled = f"{acc:.4f} ({s['pooled_ci95'][0]:.3f}-{s['pooled_ci95'][1]:.3f})" if acc is not None else "n/a"
            accs = " ".join(f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "  -  " for r in s["splits"])
            print(f"{name:38} {seed:4} {s['met_target']:5} {s['answer_nothing']:5} {pooled:>24} {s['mean_coverage']:8.4f}  {accs}")
    if args.json:
        args.json.write_text(json.dumps({"splits": table, "machine": _machine()}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
