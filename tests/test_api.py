"""The review service's API through FastAPI's TestClient, on a real SQLite store and a real tfidf model (knn for the index).

Every route, the auth matrix, clear 422s that never echo the input, the 413 limit,
dry runs that change nothing, reviews through the label journal (and undo), the
retrieval index learning a correction, micro-batching, the `keys` CLI, and a
real `taxonomist serve` on 127.0.0.1 under a short load (0 errors, text never logged).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from taxonomist import service  # noqa: E402
from taxonomist.api import ApiSettings, create_app  # noqa: E402
from taxonomist.api.keys import new_key  # noqa: E402
from taxonomist.records import Record  # noqa: E402
from taxonomist.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("payer", "cpt", "modifiers", "pos", "billed_amount", "paid_amount", "adjustment_amount", "group_code",
          "carc", "rarcs", "claim_id", "line")
SECRET = "Jane Roe DOB 1961-04-02 member 998877"


def demo_records(n: int = 1200, labelled: int = 1000, seed: int = 3) -> list[Record]:
    """Synthetic denials with their structured fields; the first `labelled` carry their label."""
    from taxonomist.demo_data import generate_records

    cols = generate_records(records=n, seed=seed)
    return [
        Record(id=cols["id"][i], text=cols["text"][i], fields={k: cols[k][i] for k in FIELDS}, source=cols["payer"][i],
               date=dt.date.fromisoformat(cols["date"][i]), label=cols["label"][i] if i < labelled else None)
        for i in range(n)
    ]


def build_store(path: Path, *, engine: str = "tfidf", n: int = 1200, labelled: int = 1000,
                params: dict | None = None, target_accuracy: float | None = 0.8) -> dict:
    """A store with demo records, a trained and active model, the rest classified (NONE queued), and a key per role."""
    from taxonomist.demo_data import demo_taxonomy

    records = demo_records(n, labelled)
    tax = demo_taxonomy()
    keys = {}
    with Store.open(path / "store.db") as store:
        store.save_taxonomy(tax)
        store.add_records(records, who="import", taxonomy_version=tax.version_id)
        service.train(engine, records[:labelled], out=path / "model", taxonomy=tax, store=store, activate=True,
                      target_accuracy=target_accuracy, params=params or {})
        model = service.load_model("active", store)
        service.classify(model.engine, records[labelled:], store=store, taxonomy=tax)
        for role in ("classifier", "reviewer", "admin"):
            key, digest, prefix = new_key()
            store.add_api_key(name=f"{role}-1", role=role, key_hash=digest, prefix=prefix, who="test")
            keys[role] = key
    return {"db": path / "store.db", "keys": keys, "records": records, "taxonomy": tax}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_store(tmp_path_factory.mktemp("api-base"))


def _client(base: dict, tmp_path: Path, **settings) -> TestClient:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "store.db"
    shutil.copy(base["db"], db)  # each test gets its own copy: reviews and operations change it
    app = create_app(ApiSettings(service=service.Settings(db=str(db)), **settings))
    return TestClient(app)


@pytest.fixture
def client(base: dict, tmp_path: Path):
    with _client(base, tmp_path) as c:
        c.keys = base["keys"]
        c.db = tmp_path / "store.db"
        yield c


def h(client_or_keys, role: str) -> dict:
    keys = client_or_keys if isinstance(client_or_keys, dict) else client_or_keys.keys
    return {"X-API-Key": keys[role]}


def _queue_first(client) -> dict:
    r = client.get("/v1/review/queue", headers=h(client, "reviewer"))
    assert r.status_code == 200, r.text
    return r.json()["items"][0]


# ----- routes, health, docs ----------------------------------------------------------------
def test_docs_health_and_readiness(client, base: dict, tmp_path: Path) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/classify", "/v1/decisions/{record_id}", "/v1/review/queue", "/v1/review/{record_id}",
              "/v1/taxonomy", "/v1/taxonomy/versions", "/v1/taxonomy/diff", "/v1/taxonomy/operations", "/v1/stats",
              "/healthz", "/readyz"):
        assert p in paths
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] is True
    with _client(base, tmp_path / "nomodel", model=None) as bare:
        r = bare.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["model"] is False
        r = bare.post("/v1/classify", json={"records": [{"id": "x", "text": "CO-197"}]}, headers=h(base["keys"], "classifier"))
        assert r.status_code == 503 and "no model is loaded" in r.json()["detail"]


ROUTES = [  # method, path, body, the least role that may call it
    ("post", "/v1/classify", {"records": [{"id": "AUTH-1", "text": "CO-197 N/A | no PA on file"}]}, "classifier"),
    ("get", "/v1/decisions/DN001001", None, "reviewer"),
    ("get", "/v1/review/queue", None, "reviewer"),
    ("post", "/v1/review/NOT-A-RECORD", {"action": "skip"}, "reviewer"),
    ("post", "/v1/review/undo", {"review_id": "nope"}, "reviewer"),
    ("get", "/v1/taxonomy", None, "reviewer"),
    ("get", "/v1/taxonomy/versions", None, "reviewer"),
    ("get", "/v1/stats", None, "reviewer"),
    ("post", "/v1/taxonomy/operations", {"op": "retire", "code": "J3", "dry_run": True}, "admin"),
    ("get", "/v1/keys", None, "admin"),
    ("post", "/v1/keys/not-a-key/revoke", None, "admin"),
]


def test_auth_matrix(client) -> None:
    order = ("classifier", "reviewer", "admin")
    for method, path, body, least in ROUTES:
        call = getattr(client, method)
        kwargs = {"json": body} if body is not None else {}
        assert call(path, **kwargs).status_code == 401, f"{path} without a key"
        assert call(path, headers={"X-API-Key": "tx_not-a-key"}, **kwargs).status_code == 401, f"{path} wrong key"
        for role in order:
            status = call(path, headers=h(client, role), **kwargs).status_code
            if order.index(role) < order.index(least):
                assert status == 403, f"{path} as {role}: {status}"
            else:
                assert status not in (401, 403), f"{path} as {role}: {status}"


def test_a_revoked_key_is_refused(client) -> None:
    with Store.open(client.db) as store:
        store.revoke_api_key("reviewer-1")
    assert client.get("/v1/stats", headers=h(client, "reviewer")).status_code == 401


def test_admin_manages_keys_over_the_api(client) -> None:
    r = client.post("/v1/keys", json={"role": "classifier", "name": "billing-system"}, headers=h(client, "admin"))
    assert r.status_code == 201
    made = r.json()
    assert made["key"].startswith("tx_") and made["role"] == "classifier" and made["created_by"] == "admin-1"
    listed = client.get("/v1/keys", headers=h(client, "admin")).json()
    assert made["id"] in [k["id"] for k in listed] and made["key"] not in json.dumps(listed)
    ok = client.post("/v1/classify", json={"records": [{"id": "K-1", "text": "CO-197"}]}, headers={"X-API-Key": made["key"]})
    assert ok.status_code == 200
    assert client.post(f"/v1/keys/{made['id']}/revoke", headers=h(client, "admin")).json()["revoked_at"]
    gone = client.post("/v1/classify", json={"records": [{"id": "K-2", "text": "CO-197"}]}, headers={"X-API-Key": made["key"]})
    assert gone.status_code == 401
    bad = client.post("/v1/keys", json={"role": "root", "name": "x"}, headers=h(client, "admin"))
    assert bad.status_code == 422


# ----- classify ------------------------------------------------------------------------------
def test_classify_answers_logs_decisions_and_queues_abstentions(client) -> None:
    body = {"records": [
        {"id": "NEW-1", "text": "CO-197 N/A | CPT 90837 POS 11 | Payer: Lakeshore HMO | No PA found for services billed."},
        {"id": "NEW-2", "text": f"{SECRET} zzzz qqqq", "fields": {"payer": "Lakeshore HMO"}},
    ]}
    r = client.post("/v1/classify", json=body, headers=h(client, "classifier"))
    assert r.status_code == 200, r.text
    decisions = {d["id"]: d for d in r.json()["decisions"]}
    d1 = decisions["NEW-1"]
    assert d1["category"] != "NONE" and d1["confidence"] > 0 and d1["alternatives"] and d1["model_id"]
    assert d1["taxonomy_version"] == client.app.state.service.taxonomy().version_id
    with Store.open(client.db) as store:
        rows = store.predictions(record_id="NEW-1") + store.predictions(record_id="NEW-2")
        assert [r["category"] for r in rows] == [decisions["NEW-1"]["category"], decisions["NEW-2"]["category"]]
        assert SECRET not in json.dumps(rows, default=str)  # decisions, never text
        if decisions["NEW-2"]["category"] == "NONE":
            assert any(i["record_id"] == "NEW-2" for i in store.review_queue())
        assert not list(store.records(["NEW-1"]))  # text is not kept unless asked


def test_classify_keep_records_makes_them_reviewable(client) -> None:
    body = {"records": [{"id": "KEEP-1", "text": "CO-16 MA130 | missing info", "fields": {"payer": "Acme"}}],
            "keep_records": True}
    assert client.post("/v1/classify", json=body, headers=h(client, "classifier")).status_code == 200
    with Store.open(client.db) as store:
        assert [r.fields["payer"] for r in store.records(["KEEP-1"])] == ["Acme"]


def test_more_than_1000_records_is_413_and_1000_is_fine(client) -> None:
    many = [{"id": f"R{i}", "text": f"CO-197 no authorization on file {i}"} for i in range(1001)]
    r = client.post("/v1/classify", json={"records": many}, headers=h(client, "classifier"))
    assert r.status_code == 413 and "at most 1000" in r.json()["detail"]
    r = client.post("/v1/classify", json={"records": many[:1000]}, headers=h(client, "classifier"))
    assert r.status_code == 200 and len(r.json()["decisions"]) == 1000


def test_validation_errors_name_the_field_and_never_echo_the_input(client) -> None:
    bad = [
        {"records": [{"id": "A", "text": SECRET, "colour": SECRET}]},  # unknown field
        {"records": [{"text": SECRET}]},  # no id
        {"records": [{"id": "A", "text": SECRET, "date": SECRET}]},  # not a date
        {"records": [{"id": SECRET * 10, "text": SECRET}]},  # id too long
        {"records": []},
    ]
    for body in bad:
        r = client.post("/v1/classify", json=body, headers=h(client, "classifier"))
        assert r.status_code == 422, body
        detail = r.json()["detail"]
        assert detail and all("loc" in d and "msg" in d and "input" not in d for d in detail)
        assert SECRET not in r.text and "1961" not in r.text
    r = client.post("/v1/classify", content=b'{"records": [' + SECRET.encode(), headers={**h(client, "classifier"), "content-type": "application/json"})
    assert r.status_code == 422 and SECRET not in r.text
    r = client.post("/v1/classify", json={"records": [{"id": "D", "text": "a"}, {"id": "D", "text": "b"}]},
                    headers=h(client, "classifier"))
    assert r.status_code == 422 and "appears twice" in r.json()["detail"]
    r = client.post("/v1/review/DN001001", json={"action": "approve"}, headers=h(client, "reviewer"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "action"]
    r = client.get("/v1/review/queue?month=2024-13-01", headers=h(client, "reviewer"))
    assert r.status_code == 422


# ----- decisions, queue, review ------------------------------------------------------------------
def test_decisions_are_the_audit_trail(client) -> None:
    item = _queue_first(client)
    r = client.get(f"/v1/decisions/{item['record_id']}", headers=h(client, "reviewer"))
    assert r.status_code == 200
    trail = r.json()
    assert trail["stored"] is True and trail["decisions"][-1]["category"] == "NONE"
    assert trail["decisions"][-1]["reason"] == item["reason"]
    assert client.get("/v1/decisions/NOPE-404", headers=h(client, "reviewer")).status_code == 404


def test_review_queue_is_ordered_and_filtered(client) -> None:
    r = client.get("/v1/review/queue?limit=500", headers=h(client, "reviewer")).json()
    items = r["items"]
    assert r["total"] == len(items) > 3
    scores = [i["score"] for i in items if i["reason"] == "below_threshold"]
    assert scores == sorted(scores)  # lowest confidence first
    first = items[0]
    by_payer = client.get("/v1/review/queue", params={"payer": first["payer"], "limit": 500},
                          headers=h(client, "reviewer")).json()
    assert by_payer["items"] and all(i["payer"] == first["payer"] for i in by_payer["items"])
    assert by_payer["total"] == sum(1 for i in items if i["payer"] == first["payer"])
    month = first["date"][:7]
    by_month = client.get("/v1/review/queue", params={"month": month, "limit": 500}, headers=h(client, "reviewer")).json()
    assert by_month["items"] and all(i["date"].startswith(month) for i in by_month["items"])
    by_cat = client.get("/v1/review/queue", params={"category": first["suggested"], "limit": 500},
                        headers=h(client, "reviewer")).json()
    assert all(i["suggested"] == first["suggested"] or i["current_label"] == first["suggested"] for i in by_cat["items"])
    none = client.get("/v1/review/queue", params={"reason": "split"}, headers=h(client, "reviewer")).json()
    assert none["total"] == 0


def test_review_goes_through_the_journal_and_can_be_undone(client) -> None:
    item = _queue_first(client)
    rid, suggested = item["record_id"], item["suggested"]
    other = "C1" if suggested != "C1" else "C2"
    r = client.post(f"/v1/review/{rid}", json={"action": "correct", "category": other, "note": "payer letter"},
                    headers=h(client, "reviewer"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["category"] == other and out["closed"] == 1 and out["index_updated"] is False  # tfidf has no index
    with Store.open(client.db) as store:
        history = store.label_history(rid)
        assert history[-1]["category"] == other and history[-1]["who"] == "reviewer-1" and history[-1]["is_current"]
        assert history[-1]["reason"] == f"review:correct:suggested={suggested}"
        assert all(i["record_id"] != rid for i in store.review_queue())
        done = store.review_queue(status="done")
        assert any(i["record_id"] == rid and i["details"].get("note") == "payer letter" for i in done)
    r = client.post("/v1/review/undo", json={"review_id": out["review_id"]}, headers=h(client, "reviewer"))
    assert r.status_code == 200
    with Store.open(client.db) as store:
        assert store.current_labels([rid]) == {}  # it had no label before the review
        assert any(i["record_id"] == rid and i["suggested"] == suggested for i in store.review_queue())
    again = client.post("/v1/review/undo", json={"review_id": out["review_id"]}, headers=h(client, "reviewer"))
    assert again.status_code == 404


def test_confirm_skip_and_a_correction_without_category(client) -> None:
    items = client.get("/v1/review/queue", headers=h(client, "reviewer")).json()["items"]
    a, b = items[0]["record_id"], items[1]["record_id"]
    r = client.post(f"/v1/review/{a}", json={"action": "confirm"}, headers=h(client, "admin")).json()
    assert r["category"] == items[0]["suggested"] and r["label_id"] is not None
    r = client.post(f"/v1/review/{b}", json={"action": "skip"}, headers=h(client, "reviewer")).json()
    assert r["label_id"] is None and r["closed"] == 1
    r = client.post(f"/v1/review/{items[2]['record_id']}", json={"action": "correct"}, headers=h(client, "reviewer"))
    assert r.status_code == 400 and "needs the category" in r.json()["detail"]
    r = client.post(f"/v1/review/{items[2]['record_id']}", json={"action": "correct", "category": "ZZ9"},
                    headers=h(client, "reviewer"))
    assert r.status_code == 400 and "not an active category" in r.json()["detail"]


# ----- taxonomy ------------------------------------------------------------------------------
def test_taxonomy_routes(client) -> None:
    tax = client.get("/v1/taxonomy", headers=h(client, "reviewer")).json()
    assert tax["version_id"].startswith("v") and tax["groups"][0]["categories"][0]["code"]
    versions = client.get("/v1/taxonomy/versions", headers=h(client, "reviewer")).json()
    assert [v["version_id"] for v in versions] == [tax["version_id"]]
    assert client.get("/v1/taxonomy/diff", headers=h(client, "reviewer")).status_code == 404  # one version only
    assert client.get("/v1/taxonomy?version=v000000000000", headers=h(client, "reviewer")).status_code == 400


def _snapshot(db: Path) -> tuple:
    with Store.open(db) as store:
        return (store.stats(), [v["version_id"] for v in store.taxonomy_versions()], len(store.predictions()),
                len(store.review_queue()), len(store.runs()))


def test_merge_dry_run_shows_the_impact_and_changes_nothing(client) -> None:
    before = _snapshot(client.db)
    labels = before[0]["by_category"]
    body = {"op": "merge", "codes": ["B1", "B4"], "into": "B9", "name": "Other payer involved", "dry_run": True}
    assert client.post("/v1/taxonomy/operations", json=body, headers=h(client, "reviewer")).status_code == 403
    r = client.post("/v1/taxonomy/operations", json=body, headers=h(client, "admin"))
    assert r.status_code == 200, r.text
    out = r.json()
    impact = out["impact"]
    assert out["applied"] is False
    assert impact["relabelled"] == {"B1": labels.get("B1", 0), "B4": labels.get("B4", 0)}
    assert impact["relabelled_total"] == labels.get("B1", 0) + labels.get("B4", 0) > 0
    assert set(impact["model"]["maps"]) == {"B1", "B4"} and impact["model"]["changed_codes"]["B1"]["target"] == "B9"
    with Store.open(client.db) as store:
        latest = {}
        for d in store.predictions():
            latest[d["record_id"]] = d["category"]
    assert impact["decisions_affected_total"] == sum(1 for c in latest.values() if c in ("B1", "B4"))
    assert _snapshot(client.db) == before  # nothing changed
    split = client.post("/v1/taxonomy/operations", json={"op": "split", "code": "C1", "parts": {"C1a": "a", "C1b": "b"}},
                        headers=h(client, "admin")).json()["impact"]
    assert split["to_review"] == {"C1": labels["C1"]} and split["model"]["abstains"] == ["C1"]
    assert _snapshot(client.db) == before
    bad = client.post("/v1/taxonomy/operations", json={"op": "merge", "codes": ["B1"]}, headers=h(client, "admin"))
    assert bad.status_code == 400 and "into" in bad.json()["detail"]


def test_applied_merge_relabels_and_the_next_decision_maps(client) -> None:
    body = {"op": "merge", "codes": ["B1", "B4"], "into": "B9", "name": "Other payer involved", "dry_run": False}
    out = client.post("/v1/taxonomy/operations", json=body, headers=h(client, "admin")).json()
    assert out["applied"] is True and out["changed"] == out["impact"]["relabelled_total"] and out["relabel_id"]
    with Store.open(client.db) as store:
        labels = store.stats()["by_category"]
        assert "B1" not in labels and labels["B9"] == out["changed"]
    diff = client.get("/v1/taxonomy/diff", headers=h(client, "reviewer")).json()
    assert any(line.startswith("+ B9") for line in diff["changes"])
    b1 = next(r for r in client.app.state.service.store.records(labelled=True) if r.label == "B9")
    d = client.post("/v1/classify", json={"records": [{"id": "M-1", "text": b1.text}]},
                    headers=h(client, "classifier")).json()["decisions"][0]
    assert d["taxonomy_version"] == out["impact"]["new_version"]
    assert d["category"] not in ("B1", "B4")


# ----- stats ----------------------------------------------------------------------------------
def test_stats_volume_coverage_reasons_and_drift(client) -> None:
    s = client.get("/v1/stats", headers=h(client, "reviewer")).json()
    assert s["decisions"] == 200 and 0 < s["coverage"] < 1
    assert s["abstain_reasons"]["below_threshold"] == s["decisions"] - s["answered"]
    month = s["by_month"][-1]
    assert sum(month["categories"].values()) == month["decisions"]
    assert 0 <= s["drift"]["mix_shift"] <= 1 and s["drift"]["confidence_shift"] == 0.0  # one month: its own reference


# ----- micro-batching ----------------------------------------------------------------------------
@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_one_model_call(base: dict, tmp_path: Path, batching: bool) -> None:
    n = 8
    with _client(base, tmp_path, micro_batching=batching, max_wait_ms=300, max_batch=64) as c:
        barrier = threading.Barrier(n)
        statuses: list[int] = []

        def one(i: int) -> None:
            barrier.wait()
            r = c.post("/v1/classify", json={"records": [{"id": f"MB-{i}", "text": f"CO-197 no PA on file {i}"}]},
                       headers=h(base["keys"], "classifier"))
            statuses.append(r.status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batcher = c.app.state.service.batcher
        assert statuses == [200] * n and batcher.items == n
        if batching:
            assert batcher.batches < n
        else:
            assert batcher.batches == n


# ----- the retrieval index learns a correction at once (knn) ----------------------------------------------
@pytest.mark.slow
def test_a_correction_reaches_the_knn_index_at_once(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    # k=1: the nearest example decides, so one reviewed near-duplicate decides (with k=10 the record's
    # nine nearest neighbours, all of its old category, outvote it while its score still rises).
    built = build_store(tmp_path_factory.mktemp("api-knn"), engine="knn", n=330, labelled=300, params={"k": 1},
                        target_accuracy=None)
    with _client(built, tmp_path) as c:
        rid = built["records"][-1].id
        item = {"suggested": None}
        text = next(r.text for r in built["records"] if r.id == rid)
        near = text + " Resubmitted."
        ask = {"records": [{"id": "NEAR-1", "text": near}]}
        before = c.post("/v1/classify", json=ask, headers=h(built["keys"], "classifier")).json()["decisions"][0]
        target = next(code for code in ("J3", "J2", "A2") if code not in (before["category"], item["suggested"]))
        r = c.post(f"/v1/review/{rid}", json={"action": "correct", "category": target}, headers=h(built["keys"], "reviewer"))
        assert r.json()["index_updated"] is True
        ask["records"][0]["id"] = "NEAR-2"
        after = c.post("/v1/classify", json=ask, headers=h(built["keys"], "classifier")).json()["decisions"][0]
        assert after["category"] == target and before["category"] != target
        assert after["evidence"][0]["ref"] == rid  # the reviewed record is the nearest example now
        c.post("/v1/review/undo", json={"review_id": r.json()["review_id"]}, headers=h(built["keys"], "reviewer"))
        ask["records"][0]["id"] = "NEAR-3"
        undone = c.post("/v1/classify", json=ask, headers=h(built["keys"], "classifier")).json()["decisions"][0]
        assert undone["category"] == before["category"]


# ----- the keys CLI ------------------------------------------------------------------------------
def test_keys_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taxonomist.cli import main

    db = str(tmp_path / "k.db")
    Store.open(db).close()
    main(["keys", "create", "--role", "reviewer", "--name", "ana", "--db", db])
    key = capsys.readouterr().out.strip()
    assert key.startswith("tx_") and len(key) > 40
    with Store.open(db) as store:
        assert key not in json.dumps(store.api_keys(), default=str)
        assert store.api_key_by_hash(__import__("hashlib").sha256(key.encode()).hexdigest())["name"] == "ana"
    main(["keys", "list", "--db", db, "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [("ana", "reviewer", None)]
    main(["keys", "revoke", "ana", "--db", db])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--role", "boss", "--name", "x", "--db", db])
    assert exit_.value.code == 1 and "role 'boss' is unknown" in capsys.readouterr().err
    main(["keys", "list", "--db", db, "--json"])
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None


# ----- the web pages without a browser (tests/test_web.py drives them in chromium) ---------------------------
def _sign_in(client, role: str):
    import re

    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/ui/login", data={"key": client.keys[role], "csrf": csrf}, follow_redirects=False)


def test_web_sign_in_sessions_and_csrf(client) -> None:
    import re

    assert client.get("/ui/queue", follow_redirects=False).headers["location"] == "/ui/login"
    r = _sign_in(client, "classifier")
    assert r.headers["location"] == "/ui/login?error=role" and "tx_session" not in r.headers.get("set-cookie", "")
    r = client.post("/ui/login", data={"key": client.keys["reviewer"], "csrf": "forged"}, follow_redirects=False)
    assert r.headers["location"] == "/ui/login?error=expired"
    r = _sign_in(client, "reviewer")
    cookie = r.headers["set-cookie"]
    assert "tx_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/ui/review/next")
    assert page.status_code == 200 and 'id="review-form"' in page.text
    rid = str(page.url).rsplit("/", 1)[1]
    record = next(iter(client.app.state.service.store.records([rid])))
    assert record.text in page.text and "CARC " + record.fields["carc"] in page.text
    for path in ("/ui/queue", "/ui/taxonomy", "/ui/dashboard"):
        assert client.get(path).status_code == 200
    assert "<svg" in client.get("/ui/dashboard").text
    r = client.post(f"/ui/review/{rid}", data={"csrf": "forged", "action": "skip"}, follow_redirects=False)
    assert r.status_code == 403 and record.text not in r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post(f"/ui/review/{rid}", data={"csrf": csrf, "action": "skip"}, follow_redirects=False)
    assert r.status_code == 303 and all(i["record_id"] != rid for i in client.app.state.service.store.review_queue())
    r = client.post("/ui/undo", data={"csrf": csrf}, follow_redirects=False)
    assert r.headers["location"] == f"/ui/review/{rid}"
    assert any(i["record_id"] == rid for i in client.app.state.service.store.review_queue())


# ----- a real server under load (the short version of benchmarks/api_load.py) -----------------------------
def test_short_load_on_a_real_server_has_no_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "api_load.py"), "--engines", "tfidf", "--calls", "150",
         "--clients", "10", "--records", "1300", "--labelled", "1000", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.exists(), proc.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert [(r["micro_batching"], r["calls"]) for r in runs] == [(True, 150), (False, 150)]
    assert all(r["errors"] == 0 and not r["text_in_server_log"] for r in runs), runs
    assert proc.returncode == 0


def test_api_keys_in_the_store(store: Store) -> None:
    """Migration 3 and the key methods, on SQLite and on TAXONOMIST_TEST_DB_URL (PostgreSQL in CI)."""
    from taxonomist.api.keys import hash_key
    from taxonomist.errors import StoreError

    key, digest, prefix = new_key()
    row = store.add_api_key(name="ana", role="reviewer", key_hash=digest, prefix=prefix, who="admin")
    assert store.api_key_by_hash(hash_key(key))["id"] == row["id"]
    assert store.api_key_by_hash(hash_key(key + "x")) is None
    _, digest2, prefix2 = new_key()
    store.add_api_key(name="ana", role="classifier", key_hash=digest2, prefix=prefix2, who="admin")
    with pytest.raises(StoreError, match="names 2 active keys"):
        store.revoke_api_key("ana")
    assert store.revoke_api_key(row["id"])["revoked_at"] is not None
    assert store.api_key_by_hash(digest) is None
    assert [k["role"] for k in store.api_keys()] == ["reviewer", "classifier"]
    with pytest.raises(StoreError, match="no active key"):
        store.revoke_api_key(row["id"])
