"""How well does `taxonomist audit` find the wrong labels of the generated denials, and does cleaning them pay?

Generates denials with the project's generator (in memory; the same seed gives the
same records as `taxonomist demo-data`), runs the audit on ids, texts and labels
only, and then - here alone - reads the hidden `label_is_noise` column to score it:

- average precision (AP) of the whole ranking, and precision, recall and AP@k at
  the flagged set (k = how many the audit flags) and at the top N (N = the true
  number of wrong labels);
- in the same run, from the same out-of-fold probabilities: the other rankings
  (margin, a self-confidence/margin blend) and the flagged set of plain confident
  learning (mean-probability thresholds, every off-diagonal record of the
  confident joint);
- the simple baseline: TF-IDF + logistic regression, 5-fold out-of-fold, lowest
  self-confidence first (scikit-learn directly, so it does not move with the engines);
- cleanlab's `find_label_issues` on the audit's probabilities, when cleanlab happens
  to be installed (it is AGPL-3.0 and never a dependency);
- the cleaning effect: a stratified 80/20 split; the tfidf engine trained on the
  80% with raw labels, with the flagged ones relabelled to the suggestion, and with
  them dropped; each scored on the 20% whose labels are clean.

    nice -n 10 python benchmarks/audit.py --seed 7 --records 80000 --json benchmarks/results/audit_seed7_80000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from _machine import cpu_model as _cpu_model  # noqa: E402
from _machine import load  # noqa: E402


def scores_at(ranking, noise, k: int) -> dict:
    """Precision, recall and AP@k of the first k records of `ranking` (indices, most suspicious first)."""
    import numpy as np

    hits = noise[ranking[:k]].astype(float)
    total = int(noise.sum())
    if k == 0 or total == 0:
        return {"k": k, "precision": 0.0, "recall": 0.0, "ap_at_k": 0.0}
    precision_at = np.cumsum(hits) / np.arange(1, k + 1)
    return {
        "k": int(k),
        "precision": float(hits.mean()),
        "recall": float(hits.sum() / total),
        "ap_at_k": float((precision_at * hits).sum() / min(k, total)),
    }


def evaluate_ranking(name: str, ranking, noise, flagged_count: int | None) -> dict:
    import numpy as np
    from sklearn.metrics import average_precision_score

    score = np.empty(len(ranking))
    score[ranking] = np.arange(len(ranking), 0, -1)  # higher = more suspicious
    row = {"method": name, "ap": float(average_precision_score(noise, score)), "top_n": scores_at(ranking, noise, int(noise.sum()))}
    row["flagged"] = scores_at(ranking, noise, flagged_count) if flagged_count is not None else None
    return row


def baseline_ranking(texts, labels, *, folds: int, seed: int):
    """TF-IDF word 1-2 grams + logistic regression, out-of-fold, lowest self-confidence first."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(texts, dtype=object)
    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    proba = np.zeros((len(y), len(classes)))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        model = LogisticRegression(C=10, max_iter=1000).fit(vec.fit_transform(x[train]), y[train])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(vec.transform(x[test]))
    p_given = proba[np.arange(len(y)), y]
    return np.argsort(p_given, kind="stable")


def cleaning_effect(result, texts, noise, *, seed: int, max_train: int = 0, jobs: int = 1, on_step=None) -> dict:
    """Train tfidf on 80% with raw / relabelled / dropped suspects; accuracy on the 20% whose labels are clean.

    Variants: the flagged set relabelled to the suggestion or dropped, and only the surest half of the
    flagged set (the top of the ranking) relabelled. `max_train` > 0 trains on a seeded random sample of
    that many of the 80% (the audit itself saw all records). `jobs` > 1 fits the variants in parallel.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from taxonomist.audit import cleaned_labels
    from taxonomist.engines import create_engine

    raw = [str(c) for c in result.classes[result.given]]
    idx = np.arange(len(raw))
    train, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=raw)
    if 0 < max_train < len(train):
        train = np.sort(np.random.default_rng(seed).choice(train, max_train, replace=False))
    test = test[~noise[test]]  # scored on clean labels only: there the given label is the truth
    texts_arr = np.asarray(texts, dtype=object)
    truth = [raw[i] for i in test]
    half = int(result.flagged.sum()) // 2
    variants = {"raw": raw, "relabel flagged": cleaned_labels(result, how="relabel"), "drop flagged": cleaned_labels(result, how="drop"),
                "relabel surest half of flagged": cleaned_labels(result, how="relabel", top=half)}
    out = {"train": int(len(train)), "test_clean": int(len(test)),
           "flagged_in_train": int(result.flagged[train].sum()),
           "truly_noisy_in_train": int(noise[train].sum()),
           "noisy_left_after_relabel_or_drop": int((noise[train] & ~result.flagged[train]).sum()),
           "surest_half": {"records": half, "truly_wrong": int(noise[result.order[:half]].sum())}}
    def score(labels) -> dict:
        keep = [i for i in train if labels[i] is not None]
        t0 = time.perf_counter()
        engine = create_engine("tfidf").fit(texts_arr[keep].tolist(), [labels[i] for i in keep])
        right = engine.predict(texts_arr[test].tolist()) == np.asarray(truth, dtype=object)
        return {"train_records": len(keep), "accuracy_clean_test": float(right.mean()), "right": right,
                "seconds": round(time.perf_counter() - t0, 1)}

    if jobs > 1:
        from joblib import Parallel, delayed

        scored = Parallel(n_jobs=min(jobs, len(variants)))(delayed(score)(v) for v in variants.values())
    else:
        scored = [score(v) for v in variants.values()]
    base = scored[0].pop("right")
    for name, row in zip(variants, scored):
        right = row.pop("right") if "right" in row else base
        # paired: test records the cleaned model gets right that the raw one got wrong, and the reverse
        row["gained"], row["lost"] = int((right & ~base).sum()), int((~right & base).sum())
        out[name] = row
        if on_step:
            on_step(f"cleaning effect: {name} {row['accuracy_clean_test']:.2%} (+{row['gained']} / -{row['lost']} records vs raw)")
    return out


def _code_version(engine: str) -> str:
    """What the cached probabilities depend on besides the data: the engine's source, the cross-fitting's, and
    scikit-learn's version (a cache written before tfidf's solver changed must not be reused). The audit's own
    estimates are not in it: rescoring cached probabilities with a changed estimator is what the cache is for."""
    import hashlib
    import inspect

    import sklearn

    from taxonomist.engines import calibration
    from taxonomist.engines.base import ENGINES, _ensure_registered

    _ensure_registered()
    sources = [inspect.getsource(sys.modules[ENGINES[engine].__module__]), inspect.getsource(calibration)]
    return hashlib.sha256("\n".join([sklearn.__version__, *sources]).encode()).hexdigest()[:12]


def cached_oof(args, ids, texts, labels, engines, engine_params, say):
    """The audit's out-of-fold (classes, proba), each engine's read from or written to `args.oof_cache`."""
    import hashlib

    import numpy as np

    from taxonomist.audit import out_of_fold_proba

    counts: dict[str, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    keep = [i for i, y in enumerate(labels) if counts[y] >= args.folds]  # as audit(skip_small=True)
    texts_k, labels_k = [texts[i] for i in keep], [labels[i] for i in keep]
    digest = hashlib.sha256("\n".join(f"{ids[i]}\t{labels[i]}" for i in keep).encode()).hexdigest()[:12]
    args.oof_cache.mkdir(parents=True, exist_ok=True)
    total = None
    for name in engines:
        params = engine_params.get(name, {})
        key = hashlib.sha256(json.dumps([name, params, args.folds, args.audit_seed, digest, _code_version(name)],
                                        sort_keys=True).encode()).hexdigest()[:16]
        path = args.oof_cache / f"oof_seed{args.seed}_{args.records}_{name}_{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=True) as z:
                classes, proba = z["classes"], z["proba"]
            say(f"{name}: out-of-fold probabilities from {path}")
        else:
            classes, proba = out_of_fold_proba(texts_k, labels_k, engines=[name], folds=args.folds, seed=args.audit_seed,
                                               engine_params={name: params}, jobs=args.jobs,
                                               on_progress=lambda done, n, what: say(f"audit {done}/{n}: {what}"))
            np.savez(path, classes=classes, proba=proba)
            say(f"{name}: wrote {path}")
        total = proba if total is None else total + proba
    total /= len(engines)
    sums = total.sum(axis=1, keepdims=True)
    return classes, np.divide(total, sums, out=np.zeros_like(total), where=sums > 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7, help="generator seed")
    ap.add_argument("--records", type=int, default=80_000)
    ap.add_argument("--engines", default="tfidf", help="engines of the audit, comma-separated")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--audit-seed", type=int, default=0, help="seed of the audit's fold assignment")
    ap.add_argument("--jobs", type=int, default=1, help="folds fitted at once (separate processes)")
    ap.add_argument("--param", action="append", default=[], metavar="ENGINE.NAME=VALUE",
                    help="an engine parameter, e.g. tfidf.C=0.1 (repeatable)")
    ap.add_argument("--confident-fraction", type=float, default=0.25)
    ap.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF + logistic regression baseline")
    ap.add_argument("--no-cleaning", action="store_true", help="skip the cleaning effect (four more tfidf fits)")
    ap.add_argument("--cleaning-train", type=int, default=0, metavar="N",
                    help="cleaning effect: train on a random N of the 80%% training part (0: all of it)")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ap.add_argument("--oof-cache", type=Path, help="keep each engine's out-of-fold probabilities here (.npz per seed, "
                    "records, engine, parameters, folds and fold seed) and reuse them on the next run")
    args = ap.parse_args(argv)

    import numpy as np
    import sklearn

    from taxonomist.audit import audit, confident_learning, noise_estimate
    from taxonomist.demo_data import generate_records

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    load_before = load()
    t0 = time.perf_counter()
    cols = generate_records(records=args.records, seed=args.seed)
    gen_seconds = time.perf_counter() - t0
    ids, texts, labels = cols["id"], cols["text"], cols["label"]
    noise = np.asarray(cols["label_is_noise"], dtype=bool)  # the hidden answer: scoring only
    del cols
    say(f"generated {len(ids):,} records ({int(noise.sum()):,} wrong labels) in {gen_seconds:.1f} s")

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    engine_params: dict[str, dict] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        engine, _, name = key.partition(".")
        if not (engine and name and value):
            ap.error(f"--param '{item}': expected ENGINE.NAME=VALUE, e.g. tfidf.C=0.1")
        engine_params.setdefault(engine, {})[name] = json.loads(value)
    t0 = time.perf_counter()
    oof = None
    if args.oof_cache:
        oof = cached_oof(args, ids, texts, labels, engines, engine_params, say)
    result = audit(ids, texts, labels, engines=engines, folds=args.folds, seed=args.audit_seed, engine_params=engine_params, jobs=args.jobs,
                   confident_fraction=args.confident_fraction, neighbours=5, skip_small=True, oof=oof,
                   on_progress=lambda done, total, what: say(f"audit {done}/{total}: {what}"))
    audit_seconds = time.perf_counter() - t0
    say(f"audit: {audit_seconds:.0f} s")
    if result.skipped:  # categories with fewer records than folds are not audited, nor scored
        keep = np.array([y not in result.skipped for y in labels])
        say(f"left out {int((~keep).sum())} records of {len(result.skipped)} tiny categories ({int(noise[~keep].sum())} wrong)")
        texts = [t for t, k in zip(texts, keep) if k]
        labels = [y for y, k in zip(labels, keep) if k]
        noise = noise[keep]
    flagged = int(result.flagged.sum())
    rows = [evaluate_ranking(f"audit ({'+'.join(engines)}): 1 - p[given], flagged = estimated count", result.order, noise, flagged)]

    # Alternatives from the same out-of-fold probabilities (no refits).
    proba, given = result.proba, result.given
    rowsidx = np.arange(len(given))
    p_given = proba[rowsidx, given]
    others = proba.copy()
    others[rowsidx, given] = -np.inf
    margin = others.max(axis=1) - p_given
    rows.append(evaluate_ranking("same probabilities: margin p[suggested] - p[given]", np.argsort(-margin, kind="stable"), noise, None))
    blend = 0.5 * (1 - p_given) + 0.5 * np.clip(margin, 0, None)
    rows.append(evaluate_ranking("same probabilities: 0.5 self-confidence + 0.5 margin", np.argsort(-blend, kind="stable"), noise, None))
    cl = confident_learning(proba, given)
    above = proba >= cl.thresholds
    confident = np.where(above, proba, -np.inf).argmax(axis=1)
    off = above.any(axis=1) & (confident != given)
    order_off = np.lexsort((p_given, ~off))  # the off-diagonal ones first, lowest self-confidence first
    rows.append(evaluate_ranking("plain confident learning: off-diagonal of the mean-threshold joint", order_off, noise, int(off.sum())))
    for frac in (0.25, 0.5, 1.0):  # the flip rates among the surest records as they are, not extrapolated
        alt = confident_learning(proba, given, confident_fraction=frac, extrapolate=False)
        rows.append(evaluate_ranking(f"audit ranking, flagged count from the surest {frac:.0%}, not extrapolated", result.order,
                                     noise, min(len(given), int(round(alt.estimated_wrong)))))
    try:
        from cleanlab.filter import find_label_issues  # AGPL-3.0: only when someone installed it

        issues = find_label_issues(given, proba, return_indices_ranked_by="self_confidence")
        rest = np.setdiff1d(np.arange(len(given)), issues)
        rows.append(evaluate_ranking("cleanlab find_label_issues (same probabilities)", np.concatenate([issues, rest[np.argsort(p_given[rest])]]),
                                     noise, len(issues)))
    except ImportError:
        pass

    baseline_seconds = None
    cleaning = None
    stages_done = ["audit"]

    def finish(final: bool) -> None:
        """Write the JSON after each stage (a long run stopped later keeps what it measured); print at the end."""

        def show(*a, **k) -> None:
            if final:
                print(*a, **k)

        est = noise_estimate(result, top_pairs=10)
        n_true = int(noise.sum())
        show(f"Label audit on generated denials: seed {args.seed}, {args.records:,} records, {n_true:,} wrong labels "
              f"({noise.mean():.2%}); audit estimate {est.estimated_wrong:,.0f}, flagged {flagged:,}")
        show(f"{'method':<78} {'AP':>6} {'P@N':>6} {'R@N':>6} {'k':>6} {'P@k':>6} {'R@k':>6} {'AP@k':>6}")
        for r in rows:
            f = r["flagged"]
            tail = f"{f['k']:>6} {f['precision']:>6.3f} {f['recall']:>6.3f} {f['ap_at_k']:>6.3f}" if f else f"{'':>6} {'':>6} {'':>6} {'':>6}"
            show(f"{r['method']:<78} {r['ap']:>6.3f} {r['top_n']['precision']:>6.3f} {r['top_n']['recall']:>6.3f} {tail}")
        show("most frequent confusions (estimated / flagged / truly wrong among flagged):")
        truly = {}
        for i in np.nonzero(result.flagged & noise)[0]:
            key = (str(result.classes[given[i]]), str(result.classes[result.suggested[i]]))
            truly[key] = truly.get(key, 0) + 1
        for p in est.pairs[:5]:
            show(f"  {p.sentence()}  ({p.flagged} flagged, {truly.get((p.given, p.suggested), 0)} of them truly wrong)")
        if cleaning:
            show(f"cleaning effect (tfidf, {cleaning['train']:,} train / {cleaning['test_clean']:,} clean test records): "
                  + ", ".join(f"{k} {cleaning[k]['accuracy_clean_test']:.2%}" for k in ("raw", "relabel flagged", "drop flagged",
                                                                                        "relabel surest half of flagged")))
        show(f"audit {audit_seconds:.0f} s" + (f", baseline {baseline_seconds:.0f} s" if baseline_seconds else "")
              + f"; CPU {_cpu_model()}, load {load_before} -> {load()}")

        out = {
            "benchmark": "audit",
            "command": "python benchmarks/audit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"),
            "seed": args.seed, "records": args.records, "true_wrong_labels": n_true,
            "left_out_categories": result.skipped,
            "engines": engines, "engine_params": engine_params, "folds": args.folds, "jobs": args.jobs, "audit_seed": args.audit_seed,
            "confident_fraction": args.confident_fraction,
            "estimated_wrong": est.estimated_wrong, "flagged": flagged,
            "rows": rows,
            "top_pairs": [{"given": p.given, "suggested": p.suggested, "estimated": p.estimated, "flagged": p.flagged,
                           "truly_wrong_among_flagged": truly.get((p.given, p.suggested), 0)} for p in est.pairs],
            "categories": [{"category": c.category, "records": c.records, "estimated_wrong": c.estimated_wrong,
                            "noise_rate": c.noise_rate, "flagged": c.flagged,
                            "true_wrong": int(noise[given == int(np.searchsorted(result.classes, c.category))].sum())}
                           for c in est.categories],
            "cleaning_effect": cleaning,
            "stages_done": list(stages_done), "complete": final,
            "seconds": {"generate": round(gen_seconds, 1), "audit": round(audit_seconds, 1),
                        "baseline": round(baseline_seconds, 1) if baseline_seconds else None},
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_before": load_before, "load_after": load()},
            "versions": {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    finish(False)
    if not args.no_baseline:
        t0 = time.perf_counter()
        say("baseline: TF-IDF + logistic regression, 5 folds")
        rows.append(evaluate_ranking("baseline: TF-IDF + logistic regression, lowest self-confidence", baseline_ranking(texts, labels, folds=5, seed=args.audit_seed), noise, None))
        baseline_seconds = time.perf_counter() - t0
        stages_done.append("baseline")
        finish(False)

    if not args.no_cleaning:
        cleaning = cleaning_effect(result, texts, noise, seed=args.seed, max_train=args.cleaning_train, jobs=args.jobs, on_step=say)
        stages_done.append("cleaning")
        finish(False)

    finish(True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
