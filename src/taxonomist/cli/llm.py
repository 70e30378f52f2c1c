"""`taxonomist prompt show` and `taxonomist llm ping`: see the exact prompt a record gets, and check a backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EngineError, RecordError
from ._console import console, err_console

__all__ = ["register"]

prompt_app = typer.Typer(help="Look at the prompts the llm engine sends.", no_args_is_help=True)
llm_app = typer.Typer(help="Check and use LLM backends (in-process llama.cpp or an OpenAI-compatible endpoint).", no_args_is_help=True)

Backend = Annotated[str, typer.Option("--backend", help="llamacpp (in-process GGUF, SmolLM2-135M by default) or openai (any OpenAI-compatible endpoint).")]
Model = Annotated[Optional[str], typer.Option("--model", help="llamacpp: path of a .gguf file; openai: the model name.")]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.")]
KeyEnv = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key (never passed on the command line).")]


def _engine_params(backend: str, model: str | None, base_url: str | None, api_key_env: str) -> dict:
    if backend not in ("llamacpp", "openai"):
        raise EngineError(f"--backend '{backend}' is not known; use llamacpp or openai")
    return {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env}


@prompt_app.command("show")
def prompt_show(
    record: Annotated[Optional[str], typer.Option("--record", help="Id of a record in the store (--db).")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Ad-hoc record text instead of --record.")] = None,
    db: Annotated[
        Optional[str],
        typer.Option("--db", envvar="TAXONOMIST_DB", help="Record store (path or SQLAlchemy URL): the record, and labelled records as examples."),
    ] = None,
    taxonomy: Annotated[Optional[Path], typer.Option("--taxonomy", help="Taxonomy YAML. Default: a flat list of the labels seen.")] = None,
    saved: Annotated[Optional[Path], typer.Option("--saved-model", help="A saved llm engine directory (instead of indexing the store's labelled records).")] = None,
    examples: Annotated[int, typer.Option("--examples", help="Few-shot examples retrieved per prompt.")] = 8,
    shortlist: Annotated[int, typer.Option("--shortlist", help="Candidate labels from retrieval (0: all codes).")] = 10,
    max_prompt_tokens: Annotated[int, typer.Option("--max-prompt-tokens", help="Token budget of the prompt.")] = 1500,
    backend: Backend = "llamacpp",
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: KeyEnv = "OPENAI_API_KEY",
    as_json: Annotated[bool, typer.Option("--json", help="Print the prompt as JSON (messages, choices, tokens).")] = False,
) -> None:
    """Print the exact prompt the llm engine would send for one record: version, token count, choices, messages.

    The prompt shows record text and retrieved examples: it is for the person who owns the data.
    """
    from ..engines import create_engine, load_engine

    if (record is None) == (text is None):
        raise RecordError("give exactly one of --record ID (with --db) or --text 'record text'")
    if saved is not None:
        engine = load_engine(saved)
        if engine.name != "llm":
            raise EngineError(f"'{saved}' holds a '{engine.name}' model; prompt show needs a saved llm engine")
    else:
        engine = None
    if record is not None or engine is None:
        from ..store import Store

        with Store.open(db) as store:
            if record is not None:
                found = list(store.records([record]))
                if not found:
                    raise RecordError(f"record '{record}' is not in the store {store.url}; check the id with `taxonomist records`")
                text = found[0].text
            if engine is None:
                labelled = list(store.records(labelled=True))
                if not labelled:
                    raise RecordError(
                        "the store has no labelled records to retrieve examples from; import labelled records "
                        "or pass --saved-model DIR"
                    )
                engine = create_engine(
                    "llm", taxonomy=str(taxonomy) if taxonomy else None, n_examples=examples, shortlist=shortlist,
                    max_prompt_tokens=max_prompt_tokens, **_engine_params(backend, model, base_url, api_key_env),
                )
                err_console.print(f"[dim]indexing {len(labelled)} labelled records for retrieval...[/dim]")
                engine.fit([r.text for r in labelled], [r.label for r in labelled])
    assert text is not None
    prompt = engine.build_prompt(text)
    if as_json:
        console.print_json(json.dumps({
            "prompt_id": prompt.prompt_id, "tokens": prompt.tokens, "tokens_exact": prompt.tokens_exact,
            "catalogue": prompt.catalogue, "choices": list(prompt.choices), "shortlist": list(prompt.shortlist),
            "examples": [{"ref": e.ref, "category": e.category, "score": e.score} for e in prompt.examples],
            "messages": list(prompt.messages),
        }))
        return
    count = f"{prompt.tokens} tokens" + ("" if prompt.tokens_exact else " (estimate: no tokenizer reachable)")
    console.print(f"[bold]prompt {prompt.prompt_id}[/bold]  {count} of {max_prompt_tokens}  catalogue={prompt.catalogue}", highlight=False)
    console.print(f"choices ({len(prompt.choices)}): {', '.join(prompt.choices)}", highlight=False)
    if prompt.dropped_examples or prompt.record_truncated:
        console.print(f"[yellow]trimmed to fit: {prompt.dropped_examples} example(s) dropped"
                      f"{', record text truncated' if prompt.record_truncated else ''}[/yellow]")
    console.print(prompt.render(), markup=False, highlight=False)


@llm_app.command("ping")
def llm_ping(
    backend: Backend = "llamacpp",
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: KeyEnv = "OPENAI_API_KEY",
    structured: Annotated[str, typer.Option("--structured", help="auto, json_schema, json_object, grammar or none.")] = "auto",
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds the whole ping may take, retries and model loading included.")
    ] = 30.0,
) -> None:
    """Send one tiny constrained request and report the answer, tokens and latency.

    Exits 1 when no answer comes within --timeout, or when the answer is not one
    of the two choices (the backend does not enforce constrained answers).
    """
    import threading
    import time

    from ..errors import BackendError

    if backend not in ("llamacpp", "openai"):
        raise EngineError(f"--backend '{backend}' is not known; use llamacpp or openai")
    if backend == "openai" and (not base_url or not model):
        raise EngineError("--backend openai needs --base-url and --model")
    where = base_url if backend == "openai" else f"the model {model or 'SmolLM2 (default)'}"
    choices = ("yes", "no")
    outcome: dict = {}

    def ping() -> None:
        # Everything slow (imports, model load, retries, the tokenizer probe) runs here, under the deadline.
        try:
            from ..engines.llm import _parse
            from ..llm.backends import ChatRequest, LlamaCppBackend, OpenAICompatibleBackend, RetryPolicy

            if backend == "llamacpp":
                b = LlamaCppBackend(model_path=model)
            else:  # each try may take the whole budget; the deadline below bounds them all together
                b = OpenAICompatibleBackend(
                    base_url=base_url, model=model, api_key_env=api_key_env, structured=structured, timeout_s=timeout,
                    retry=RetryPolicy(max_retries=2, base_s=0.25, max_s=max(0.25, timeout / 4)),
                )
            try:
                outcome["response"] = r = b.complete(ChatRequest(
                    messages=({"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": "Is the sky blue?"}),
                    choices=choices,
                ))
                outcome["chosen"] = _parse(r.text, choices)
                outcome["tokens"] = b.count_tokens("Is the sky blue?")
            finally:
                b.close()
        except BaseException as exc:  # reported by the waiting thread
            outcome["error"] = exc

    started = time.monotonic()
    # A daemon thread: a server that never answers must not keep the process alive after the deadline.
    worker = threading.Thread(target=ping, name="llm-ping", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise BackendError(f"{where}: no answer within --timeout {timeout:g} s; is the server up and the model loaded?")
    if "error" in outcome:
        raise outcome["error"]
    r, chosen = outcome["response"], outcome["chosen"]
    _, exact = outcome["tokens"]
    if chosen is None:
        shown = r.text if len(r.text) <= 40 else r.text[:37] + "..."
        raise BackendError(
            f"{where}: model {r.model} answered {shown!r}, which is not one of the choices ({', '.join(choices)}); "
            "the endpoint does not enforce constrained answers: try another --structured mode"
        )
    console.print(
        f"model {r.model}: answered {chosen!r} in {r.latency_s * 1000:.0f} ms "
        f"(whole ping {(time.monotonic() - started) * 1000:.0f} ms); prompt {r.prompt_tokens} tokens "
        f"({r.cached_tokens} cached), completion {r.completion_tokens}; constrained={r.constrained}; "
        f"tokenizer {'exact' if exact else 'estimate'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(prompt_app, name="prompt")
    app.add_typer(llm_app, name="llm")
