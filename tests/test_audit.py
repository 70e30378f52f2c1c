"""Label audit on generated denials with the real tfidf engine: planted flips surface, the hidden answer is never read."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from taxonomist.audit import audit, cleaned_labels, confident_learning, noise_estimate, out_of_fold_proba
from taxonomist.cli import main
from taxonomist.errors import ExperimentError

FOLDS = 3


def run(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def denials() -> dict[str, list]:
    """2,500 generated denial lines, categories with at least 20 records (the audit needs >= FOLDS per category)."""
    from taxonomist.demo_data import generate_records

    cols = generate_records(records=2500, seed=5)
    counts = Counter(cols["label"])
    keep = [i for i, y in enumerate(cols["label"]) if counts[y] >= 20]
    return {k: [v[i] for i in keep] for k, v in cols.items()}


def _write_csv(path: Path, cols: dict[str, list], names: tuple[str, ...]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i in range(len(cols["id"])):
            w.writerow([cols[c][i] for c in names])
    return path


def test_planted_flips_rank_at_the_top(denials):
    """Labels moved to an unrelated category (another group, no shared code) rank at the top, with the right suggestion.

    The generator's own noisy labels are left out first, so the planted ones compete only with honest records.
    """
    from taxonomist.demo_data._generator import confusable

    counts = Counter(denials["label"])
    keep = [i for i, (y, noisy) in enumerate(zip(denials["label"], denials["label_is_noise"])) if counts[y] >= 50 and not noisy]
    ids = [denials["id"][i] for i in keep]
    texts = [denials["text"][i] for i in keep]
    labels = [denials["label"][i] for i in keep]
    codes = sorted(set(labels))
    rng = random.Random(0)
    planted = rng.sample(range(len(labels)), 15)
    truth = {}
    for i in planted:
        truth[i] = labels[i]
        labels[i] = rng.choice([c for c in codes if c[0] != labels[i][0] and c not in confusable(labels[i])])
    result = audit(ids, texts, labels, folds=FOLDS, seed=0, top=100)
    rank = {s.id: s for s in result.suspects}
    assert len(result.suspects) == 100 < len(ids) / 15
    found = [i for i in planted if ids[i] in rank]
    assert len(found) == 15, f"only {len(found)} of 15 planted flips in the top 100 of {len(ids)}"
    assert sum(rank[ids[i]].rank <= 20 for i in planted) >= 8
    assert all(rank[ids[i]].suggested == truth[i] for i in planted)
    # Ranks and scores: 1..N, most suspicious first; evidence names neighbours by id and label.
    assert [s.rank for s in result.suspects] == list(range(1, 101))
    assert all(a.score >= b.score for a, b in zip(result.suspects, result.suspects[1:]))
    s = rank[ids[planted[0]]]
    assert len(s.neighbours) == 5 and all(n.id != s.id and n.label in codes for n in s.neighbours)
    # Cleaning the top 100 by relabelling restores every planted label; dropping removes them.
    cleaned = cleaned_labels(result, top=100)
    assert all(cleaned[i] == truth[i] for i in planted)
    assert cleaned_labels(result, how="drop", top=3).count(None) == 3


def test_generated_noise_is_found(denials):
    """The generator's own ~3% noise: the flagged set and the ranking beat chance by far (scored with the hidden column)."""
    noise = np.array(denials["label_is_noise"], dtype=bool)
    result = audit(denials["id"], denials["text"], denials["label"], folds=FOLDS, seed=0)
    assert noise.mean() < 0.06
    flagged = result.flagged
    assert flagged.sum() == len(result.suspects) > 0
    precision = (flagged & noise).sum() / flagged.sum()
    assert precision > 4 * noise.mean()  # chance is the noise rate
    top = result.order[: noise.sum()]
    assert noise[top].mean() > 0.35
    est = noise_estimate(result, top_pairs=3)
    assert est.flagged == flagged.sum() and len(est.pairs) == 3
    assert 0.3 * noise.sum() < est.estimated_wrong < 3 * noise.sum()
    assert est.pairs[0].estimated >= est.pairs[1].estimated >= est.pairs[2].estimated
    assert sum(c.records for c in est.categories) == len(noise)
    assert "records labelled" in est.pairs[0].sentence()


def test_hidden_noise_column_is_never_read(denials, tmp_path):
    """Shuffle label_is_noise in the file: the audit's output is byte for byte the same."""
    names = ("id", "text", "label", "label_is_noise", "payer")
    a = _write_csv(tmp_path / "a.csv", denials, names)
    shuffled = dict(denials)
    flags = list(denials["label_is_noise"])
    random.Random(1).shuffle(flags)
    shuffled["label_is_noise"] = [not f for f in flags]  # and inverted: nothing of the original is left
    b = _write_csv(tmp_path / "b.csv", shuffled, names)
    outs = []
    for src in (a, b):
        out = tmp_path / f"{src.stem}-suspects.csv"
        assert run("audit", "--data", str(src), "--folds", str(FOLDS), "--out", str(out), "--top", "200") == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == 201


def test_cli_writes_suspects_from_the_store(denials, tmp_path, capsys):
    """Import into a real SQLite store, audit its current labels: suspects.csv has the columns and no record text."""
    from taxonomist.demo_data import demo_taxonomy

    tax_path = tmp_path / "taxonomy.yaml"
    demo_taxonomy().save(tax_path)
    data = _write_csv(tmp_path / "denials.csv", denials, ("id", "date", "text", "label"))
    db = str(tmp_path / "t.db")
    assert run("import", str(data), "--taxonomy", str(tax_path), "--db", db) == 0
    capsys.readouterr()
    out = tmp_path / "suspects.csv"
    assert run("audit", "--db", db, "--folds", str(FOLDS), "--seed", "1", "--param", "tfidf.C=0.1", "--jobs", "2", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "labels look wrong" in captured.out and "Most frequent confusions" in captured.out
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "given", "suggested", "score", "rank", "neighbours"]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    ids = set(denials["id"])
    assert all(r["id"] in ids and r["given"] != r["suggested"] for r in rows)
    assert all(n.split(":")[0] in ids for r in rows for n in r["neighbours"].split())
    body = out.read_text(encoding="utf-8")
    assert not any(t in body for t in denials["text"][:50])
    # With a taxonomy, each suspect carries both categories' definitions (Python API).
    result = audit(denials["id"], denials["text"], denials["label"], folds=FOLDS, taxonomy=demo_taxonomy(), top=3)
    assert all(s.given_definition and s.suggested_definition for s in result.suspects)


def test_cli_to_review_fills_the_queue(denials, tmp_path):
    from taxonomist.store import Store

    data = _write_csv(tmp_path / "denials.csv", denials, ("id", "text", "label"))
    db = str(tmp_path / "t.db")
    assert run("import", str(data), "--db", db) == 0
    out = tmp_path / "suspects.csv"
    assert run("audit", "--db", db, "--folds", str(FOLDS), "--out", str(out), "--top", "10", "--to-review", "--who", "ana") == 0
    with Store.open(db) as store:
        queue = store.review_queue(reason="suspected_mislabel")
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {q["record_id"] for q in queue} == {r["id"] for r in rows}
    first = queue[0]  # the queue shows the most suspicious first
    assert first["record_id"] == rows[0]["id"] and first["suggested"] == rows[0]["suggested"]
    assert first["details"]["rank"] == 1 and len(first["details"]["neighbours"]) == 5
    # Running again adds nothing: those records are already open for the same reason.
    assert run("audit", "--db", db, "--folds", str(FOLDS), "--out", str(out), "--top", "10", "--to-review", "--who", "ana") == 0
    with Store.open(db) as store:
        assert len(store.review_queue(reason="suspected_mislabel")) == 10


def test_confident_learning_on_a_known_matrix():
    # Three categories; record 3 is labelled 0 but the model is sure it is 1.
    proba = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.05, 0.9, 0.05],
                      [0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]])
    given = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    cl = confident_learning(proba, given, confident_fraction=1.0, extrapolate=False)
    assert np.allclose(cl.thresholds, [(0.9 + 0.8 + 0.7 + 0.05) / 4, 0.75, 0.75])
    assert cl.confident_joint[0, 1] == 1 and cl.confident_joint[0, 0] == 3
    # Of the 3 records predicted 1, one is labelled 0: about 1 record labelled 0 is truly 1.
    assert cl.noise_matrix[0, 1] == pytest.approx(1.0) and cl.estimated_wrong == pytest.approx(1.0)


def test_noise_estimate_extrapolates_to_the_surest_records():
    """Disagreement that grows down the confidence ranking (ambiguous texts) is extrapolated away: 2 d(f/2) - d(f)."""
    # f = 1/2. 16 records predicted 0, surest first: among the surest 4 one is labelled 1 (d = 1/4), among the
    # surest 8 three are (d = 3/8): extrapolated 2/4 - 3/8 = 1/8 of 16 = 2 records labelled 1 that truly are 0
    # (6 from d(f) alone).
    p0 = np.linspace(0.99, 0.6, 16)
    labelled_one = {2, 5, 7, 12}
    # 4 records predicted 1: the surest one labelled 0 (d(f/2) = 1), the surest two [0, 1] (d(f) = 1/2): 2 - 1/2 =
    # 1.5 is more than d(f/2), so it is clipped to d(f/2) = 1 (4 records).
    p1 = np.array([0.95, 0.9, 0.85, 0.8])
    proba = np.vstack([np.column_stack([p0, 1 - p0]), np.column_stack([1 - p1, p1])])
    given = np.array([1 if r in labelled_one else 0 for r in range(16)] + [0, 1, 1, 1])
    old = confident_learning(proba, given, confident_fraction=0.5, extrapolate=False)
    assert old.noise_matrix[1, 0] == pytest.approx(6.0) and old.noise_matrix[0, 1] == pytest.approx(2.0)
    # The count is 2 + 4 = 6 (8 without); the matrix keeps d(f)'s proportions, scaled to that count.
    new = confident_learning(proba, given, confident_fraction=0.5)
    assert new.estimated_wrong == pytest.approx(6.0)
    assert np.allclose(new.noise_matrix, old.noise_matrix * 6 / 8)


def test_several_engines_are_averaged(denials):
    texts, labels = denials["text"][:600], denials["label"][:600]
    counts = Counter(labels)
    keep = [i for i, y in enumerate(labels) if counts[y] >= FOLDS]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    classes, one = out_of_fold_proba(texts, labels, engines=["tfidf"], folds=FOLDS)
    _, soft = out_of_fold_proba(texts, labels, engines=["tfidf"], folds=FOLDS, engine_params={"tfidf": {"scale": 1.0}})
    _, both = out_of_fold_proba(texts, labels, engines=["tfidf", "tfidf"], folds=FOLDS,
                                engine_params={"tfidf": {"scale": 1.0}})
    assert np.allclose(both, soft) and not np.allclose(one, soft)
    assert list(classes) == sorted(set(labels)) and np.allclose(one.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("labels", "folds", "message"),
    [
        ([], 3, "no labelled records"),
        (["A1"] * 10, 3, "one category ('A1')"),
        (["A1"] * 10 + ["B2"] * 2, 3, "too few in 'B2' (2); lower --folds (to at most 2)"),
        (["A1"] * 10 + ["B2"] * 1, 3, "too few in 'B2' (1); leave them out"),
        (["A1"] * 10 + ["B2"] * 10, 1, "at least 2"),
    ],
)
def test_clear_errors(labels, folds, message):
    texts = [f"text {i}" for i in range(len(labels))]
    with pytest.raises(ExperimentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        audit([str(i) for i in range(len(labels))], texts, labels, folds=folds)


def test_skip_small_leaves_out_tiny_categories(denials):
    ids, texts, labels = denials["id"][:400], denials["text"][:400], list(denials["label"][:400])
    labels[0] = "ZZ9"  # a category with a single record
    result = audit(ids, texts, labels, folds=FOLDS, skip_small=True, top=5)
    assert "ZZ9" in result.skipped and ids[0] not in result.ids


def test_cli_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "unlabelled.csv"
    data.write_text("id,text\n1,CO-197 no auth\n2,CO-16 missing info\n", encoding="utf-8")
    assert run("audit", "--data", str(data), "--out", str(tmp_path / "s.csv")) == 1
    err = capsys.readouterr().err
    assert "no labelled records" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()
    assert run("audit", "--data", str(data), "--out", str(tmp_path / "s.csv"), "--to-review") == 1
    assert "--to-review" in capsys.readouterr().err
    assert run("audit", "--data", str(data), "--out", str(tmp_path / "s.csv"), "--param", "head.C=1") == 1
    assert "expected ENGINE.NAME=VALUE for one of --engines (tfidf)" in capsys.readouterr().err
    assert run("audit", "--db", str(tmp_path / "typo.db"), "--out", str(tmp_path / "s.csv")) == 1
    assert "no store at" in capsys.readouterr().err and not (tmp_path / "typo.db").exists()


def test_compare_report_says_how_clean_the_history_is(tmp_path):
    """A comparison audits its training records: planted C1 -> C2 flips lead the pairs; report.md and report.html show it."""
    from taxonomist.compare import EngineSpec, Settings, load_dataset, run_compare

    rng = np.random.default_rng(0)
    words = {f"C{i}": [f"w{i}x{j}" for j in range(8)] for i in range(5)}
    filler = [f"n{j}" for j in range(40)]
    rows, planted = [], set()
    for r in range(1000):
        label = f"C{r % 5}"
        text = " ".join([*rng.choice(words[label], 3), *rng.choice(filler, 4)])
        if label == "C1" and r % 20 == 1:  # every 4th C1 record (5% of all) is labelled C2
            label = "C2"
            planted.add(f"r{r:04d}")
        rows.append({"id": f"r{r:04d}", "text": text, "label": label})
    path = _write_csv(tmp_path / "records.csv", {k: [row[k] for row in rows] for k in ("id", "text", "label")},
                      ("id", "text", "label"))
    results = run_compare(load_dataset(path), None, [EngineSpec("tfidf")], out_dir=tmp_path / "out",
                          settings=Settings(seeds=1, ks=("all",), latency_items=5, throughput_items=20))
    found = results["audit"]
    assert found["records"] == 800 and found["engine"] == "tfidf"  # the training pool: 80% of the records
    top = found["pairs"][0]
    assert (top["given"], top["suggested"]) == ("C2", "C1")
    in_pool = len(planted & set(found["suspect_ids"]))
    assert in_pool >= 6  # the 8 ids shown first are (nearly all) planted flips
    noisiest = found["categories"][0]
    assert noisiest["category"] == "C2" and 0.1 < noisiest["noise_rate"] < 0.4  # ~40 of ~200 records labelled C2
    assert 0.02 < found["share_flagged"] < 0.1
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "## How clean is your history?" in md and "<h2>How clean is your history?</h2>" in html
    assert "records labelled C2 look like C1" in md and "noise rate" in html
    assert "text" not in {k for p in found["pairs"] for k in p}  # ids and codes only


def test_review_queue_shows_suspects_with_their_evidence(denials, tmp_path, capsys):
    """`records review` and the web review page show a suspect's both definitions, probabilities and neighbours."""
    import re

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from taxonomist import service
    from taxonomist.api import ApiSettings, create_app
    from taxonomist.api.keys import new_key
    from taxonomist.demo_data import demo_taxonomy
    from taxonomist.store import Store

    tax = demo_taxonomy()
    tax_path = tmp_path / "taxonomy.yaml"
    tax.save(tax_path)
    data = _write_csv(tmp_path / "denials.csv", denials, ("id", "text", "label"))
    db = str(tmp_path / "t.db")
    assert run("import", str(data), "--taxonomy", str(tax_path), "--db", db) == 0
    assert run("audit", "--db", db, "--folds", str(FOLDS), "--out", str(tmp_path / "s.csv"), "--top", "3", "--to-review") == 0
    with Store.open(db) as store:
        first = store.review_queue(reason="suspected_mislabel")[0]
        key, digest, prefix = new_key()
        store.add_api_key(name="rev", role="reviewer", key_hash=digest, prefix=prefix, who="test")
    rid, suggested = first["record_id"], first["suggested"]
    given = denials["label"][denials["id"].index(rid)]
    neighbours = first["details"]["neighbours"]
    assert given != suggested and len(neighbours) == 5
    capsys.readouterr()
    assert run("records", "review", "--db", db, "--reason", "suspected_mislabel") == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"{rid} labelled {given} looks like {suggested}" in out
    assert " ".join(tax[given].describe().split()) in out and " ".join(tax[suggested].describe().split()) in out
    assert all(f"{n['id']}:{n['label']}" in out for n in neighbours)

    with TestClient(create_app(ApiSettings(service=service.Settings(db=db)))) as client:
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        client.post("/ui/login", data={"key": key, "csrf": csrf}, follow_redirects=False)
        page = client.get(f"/ui/review/{rid}")
    assert page.status_code == 200 and "Why this label looks wrong" in page.text
    from html import unescape

    text = unescape(page.text)
    assert tax[given].describe() in text and tax[suggested].describe() in text
    neighbour_texts = {denials["id"][i]: denials["text"][i] for i in range(len(denials["id"]))}
    assert all(n["id"] in text and neighbour_texts[n["id"]] in text for n in neighbours)
