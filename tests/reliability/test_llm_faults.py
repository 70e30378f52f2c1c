"""The llm engine against a fault-injecting OpenAI-compatible server on 127.0.0.1: 0 lost records, 0 invented labels.

Every record gets a seeded plan: up to 3 transient faults (HTTP 500/503, 429 with
Retry-After, a hang past the client's timeout, a 200 whose body is not JSON, a
dropped connection), then a final answer: a valid code, a code that is not in the
taxonomy, NONE, or a valid code trickled slowly. Transient faults must be retried,
an answer outside the taxonomy must become NONE (after one repair request), and
every record must come back with a category the server actually sent, or NONE.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from taxonomist.engines import create_engine  # noqa: E402
from taxonomist.taxonomy import ABSTAIN  # noqa: E402

from ..llm_servers import ok_reply  # noqa: E402
from ..test_llm_engine import EXAMPLES, TAXONOMY  # noqa: E402

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CODES = ["card_arrival", "card_lost", "pin_blocked", "exchange_rate", "refund_missing", "top_up_failed"]
FAULTS = ["500", "503", "429", "hang", "garbage", "drop"]
FINALS = ["valid", "valid", "valid", "invalid", "none", "slow"]
TIMEOUT_S = 1.0
N_RECORDS = 30


class PlannedFaultServer:
    """Answers each record's requests from its plan (the record is found by its `ref-N` tag); thread-safe."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.plans: dict[str, list[tuple[str, str]]] = {}
        for n in range(N_RECORDS):
            steps = [(rng.choice(FAULTS), "") for _ in range(rng.choice([0, 1, 1, 2, 3]))]
            final = rng.choice(FINALS)
            answer = {"valid": rng.choice(CODES), "slow": rng.choice(CODES), "invalid": "crypto_scam", "none": "NONE"}[final]
            steps.append((final, answer))
            self.plans[f"ref-{n}"] = steps
        self.sent: dict[str, set[str]] = {k: set() for k in self.plans}
        self.faults: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b"{}")
                    return
                text = " ".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
                ref = re.findall(r"ref-\d+", text)
                with server.lock:
                    plan = server.plans.get(ref[-1]) if ref else None
                    kind, answer = (plan.pop(0) if len(plan) > 1 else plan[0]) if plan else ("valid", "NONE")
                    if kind in FAULTS:
                        server.faults[kind] += 1
                    elif ref:
                        server.sent[ref[-1]].add(answer)
                if kind in ("500", "503"):
                    self._send(int(kind), json.dumps({"error": {"message": "injected", "code": int(kind)}}).encode())
                elif kind == "429":
                    self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0"})
                elif kind == "hang":
                    time.sleep(TIMEOUT_S * 2.5)
                    self._send(200, json.dumps(ok_reply("card_lost")).encode())
                elif kind == "garbage":
                    self._send(200, b"<html>502 upstream proxy error</html>")
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                elif kind == "slow":  # a valid reply trickled out, slower than one timeout in all but alive
                    payload = json.dumps(ok_reply(answer)).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    for i in range(0, len(payload), max(1, len(payload) // 6)):
                        self.wfile.write(payload[i : i + max(1, len(payload) // 6)])
                        self.wfile.flush()
                        time.sleep(TIMEOUT_S / 4)
                else:
                    self._send(200, json.dumps(ok_reply(answer)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def taxonomy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "taxonomy.yaml"
    path.write_text(TAXONOMY)
    return path


def _engine(base_url: str, taxonomy_file, **kw):
    texts, labels = zip(*EXAMPLES)
    params = dict(backend="openai", base_url=base_url, model="fault-model", structured="none", taxonomy=str(taxonomy_file),
                  cache=False, max_retries=4, timeout_s=TIMEOUT_S, n_examples=2, max_prompt_tokens=600, max_concurrency=4)
    return create_engine("llm", **{**params, **kw}).fit(list(texts), list(labels))


def test_faults_lose_no_record_and_invent_no_label(taxonomy_file, tally):
    server = PlannedFaultServer(seed=11)
    finals = {ref: plan[-1] for ref, plan in server.plans.items()}
    try:
        engine = _engine(server.base_url, taxonomy_file)
        records = [f"My card question number ref-{n}, please help" for n in range(N_RECORDS)]
        predicted = list(engine.predict(records))
    finally:
        server.stop()
    tally["faults_injected"] += sum(server.faults.values())
    tally["records_checked"] += N_RECORDS
    lost = N_RECORDS - len(predicted)
    invented = [(n, p) for n, p in enumerate(predicted) if p != ABSTAIN and p not in server.sent[f"ref-{n}"]]
    tally["lost"] += lost
    tally["invented_labels"] += len(invented)
    assert lost == 0 and invented == []
    for n, category in enumerate(predicted):
        kind, answer = finals[f"ref-{n}"]
        if kind in ("invalid", "none"):
            assert category == ABSTAIN, (n, kind, category)  # an answer outside the taxonomy never becomes a label
        else:
            assert category in (answer, ABSTAIN), (n, kind, answer, category)
    kinds = set(server.faults)
    assert {"500", "429", "hang", "garbage"} <= kinds | {"503"} and len(kinds) >= 4, server.faults
    print(f"\nllm faults injected: {dict(server.faults)}; records {N_RECORDS}, lost {lost}, invented {len(invented)}")


def test_a_switched_endpoint_is_not_answered_from_the_old_cache(taxonomy_file, tmp_path):
    db = str(tmp_path / "store.db")
    first, second = PlannedFaultServer(seed=1), PlannedFaultServer(seed=2)
    record = "Where is my new card ref-0"
    first.plans["ref-0"], second.plans["ref-0"] = [("valid", "card_arrival")], [("valid", "card_lost")]
    try:
        a = _engine(first.base_url, taxonomy_file, cache=True, store=db)
        assert list(a.predict([record])) == ["card_arrival"]
        again = _engine(first.base_url, taxonomy_file, cache=True, store=db)
        assert list(again.predict([record])) == ["card_arrival"]  # same endpoint: served from the store's cache
        b = _engine(second.base_url, taxonomy_file, cache=True, store=db)  # same model name, another server
        assert list(b.predict([record])) == ["card_lost"]
        assert second.sent["ref-0"] == {"card_lost"}
    finally:
        first.stop()
        second.stop()
