"""The prompt builder: a static prefix first, then retrieved examples, then the record, within a token budget.

Layout (chat messages), chosen so that a server or llama.cpp reuses the KV
cache of everything that does not change between records:

1. system: instructions + the taxonomy catalogue. Identical for every record
   of a taxonomy version: the cacheable prefix. The catalogue holds full
   definitions when they fit in `prefix_share` of the budget, else a compact
   code list, else nothing (then only the shortlist names codes).
2. system, continued: definitions of the shortlisted categories (retrieval's
   most likely labels), only when the catalogue is compact. This part varies
   per record; it comes after the static text so the prefix stays reusable.
3. few-shot turns: retrieved labelled examples as user/assistant pairs, least
   similar first (the nearest sits next to the record).
4. user: the record.

The prompt is versioned: `PROMPT_VERSION` changes by hand when the wording's
intent changes, and `TEMPLATE_HASH` changes with any edit of the templates.
`prompt_id()` joins them; every prediction records it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..prediction import Evidence
from ..taxonomy import ABSTAIN, Category, Taxonomy

__all__ = [
    "PROMPT_VERSION",
    "TEMPLATE_HASH",
    "Prompt",
    "PromptBuilder",
    "prompt_id",
]

PROMPT_VERSION = "1"

SYSTEM_TEMPLATE = (
    "You classify {what} into the categories of the taxonomy \"{name}\".{description}\n"
    "Reply with one category code only. If no category fits, reply {abstain}.\n"
    "{catalogue_heading}\n{catalogue}"
)
CATALOGUE_FULL = "Categories (code: meaning):"
CATALOGUE_COMPACT = "Category codes:"
CATALOGUE_NONE = "Category codes are given with each record."
CANDIDATES_TEMPLATE = "\n\nMost likely categories for the next record:\n{candidates}"
RECORD_TEMPLATE = "Record: {text}"
TRUNCATED_MARK = " [...]"

TEMPLATE_HASH = hashlib.sha256(
    "\x1e".join(
        [SYSTEM_TEMPLATE, CATALOGUE_FULL, CATALOGUE_COMPACT, CATALOGUE_NONE, CANDIDATES_TEMPLATE, RECORD_TEMPLATE, TRUNCATED_MARK]
    ).encode()
).hexdigest()[:10]


def prompt_id() -> str:
    """Version of the prompt wording: `PROMPT_VERSION` + hash of the templates."""
    return f"p{PROMPT_VERSION}-{TEMPLATE_HASH}"


#: Counts tokens of a chat prompt: returns (count, exact?). Exact means the model's own tokenizer.
ChatTokenCounter = Callable[[Sequence[dict[str, str]]], tuple[int, bool]]


@dataclass(frozen=True)
class Prompt:
    """A built prompt and what went into it."""

    messages: tuple[dict[str, str], ...]
    choices: tuple[str, ...]
    prompt_id: str
    tokens: int
    tokens_exact: bool
    static_prefix: str
    catalogue: str  # "full" | "compact" | "none"
    shortlist: tuple[str, ...] = ()
    examples: tuple[Evidence, ...] = ()
    record_truncated: bool = False
    dropped_examples: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """A readable rendering (for `taxonomist prompt show`)."""
        out = []
        for m in self.messages:
            out.append(f"--- {m['role']} ---\n{m['content']}")
        return "\n".join(out)


def _describe(cat: Category) -> str:
    if not (cat.definition or cat.include or cat.exclude or cat.source_codes):
        return _compact(cat)  # nothing to say beyond the name
    return f"- {cat.code}: {cat.describe()}"


def _compact(cat: Category) -> str:
    # Flat taxonomies built from labels have names that only repeat the code.
    if cat.name.strip().lower() == cat.code.replace("_", " ").replace("-", " ").lower():
        return f"- {cat.code}"
    return f"- {cat.code}: {cat.name}"


class PromptBuilder:
    """Builds `Prompt`s for one taxonomy version within `max_prompt_tokens`.

    `count` measures a chat prompt with the model's tokenizer (see
    `Backend.count_chat_tokens`); the builder trims, in this order, examples
    (least similar first), candidate definitions (down to bare codes), the
    shortlist, and finally the record text, until the prompt fits.
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        count: ChatTokenCounter,
        max_prompt_tokens: int = 1500,
        prefix_share: float = 0.5,
        constrain: str = "shortlist",
        what: str = "records",
    ) -> None:
        if constrain not in ("shortlist", "taxonomy"):
            raise ValueError(f"constrain='{constrain}': expected 'shortlist' or 'taxonomy'")
        self.taxonomy = taxonomy
        self.count = count
        self.max_prompt_tokens = max_prompt_tokens
        self.prefix_share = prefix_share
        self.constrain = constrain
        self.what = what
        self.catalogue, self.static_prefix = self._static_prefix()

    # ----- the static part ----------------------------------------------------------
    def _system(self, heading: str, lines: Sequence[str]) -> str:
        desc = self.taxonomy.description.strip()
        return SYSTEM_TEMPLATE.format(
            what=self.what,
            name=self.taxonomy.name,
            description=(" " + desc) if desc else "",
            abstain=ABSTAIN,
            catalogue_heading=heading,
            catalogue="\n".join(lines),
        )

    def _static_prefix(self) -> tuple[str, str]:
        cats = self.taxonomy.active_categories
        limit = self.max_prompt_tokens * self.prefix_share
        full = self._system(CATALOGUE_FULL, [_describe(c) for c in cats])
        if self.count([{"role": "system", "content": full}])[0] <= limit:
            return "full", full
        compact = self._system(CATALOGUE_COMPACT, [_compact(c) for c in cats])
        if self.count([{"role": "system", "content": compact}])[0] <= limit:
            return "compact", compact
        return "none", self._system(CATALOGUE_NONE, [])

    # ----- one record ---------------------------------------------------------------
    def build(
        self,
        text: str,
        *,
        examples: Sequence[Evidence] = (),
        shortlist: Sequence[str] = (),
    ) -> Prompt:
        """Prompt for one record. `examples` most similar first; `shortlist` most likely first."""
        tax = self.taxonomy
        shortlist = [c for c in dict.fromkeys(shortlist) if c in tax and tax[c].active]
        if self.catalogue == "none" and not shortlist:
            shortlist = list(tax.codes)
        examples = [e for e in examples if e.text]
        detailed = self.catalogue != "full"
        n_examples = len(examples)
        n_short = len(shortlist)
        record = text
        truncated = False
        while True:
            messages = self._messages(record, examples[:n_examples], shortlist[:n_short], detailed)
            tokens, exact = self.count(messages)
            if tokens <= self.max_prompt_tokens:
                break
            if n_examples > 0:
                n_examples -= 1
            elif detailed and n_short:
                detailed = False
            elif n_short > 1 and self.catalogue != "none":
                n_short = max(1, n_short // 2)
            elif len(record) > 64:
                cut = int(len(record) * 0.8)
                record = record[:cut]
                truncated = True
            else:
                break  # cannot shrink further; the backend reports an over-long prompt clearly
        if truncated:
            messages = self._messages(record + TRUNCATED_MARK, examples[:n_examples], shortlist[:n_short], detailed)
            tokens, exact = self.count(messages)
        used_short = tuple(shortlist[:n_short])
        if self.constrain == "shortlist" and used_short:
            choices = used_short + (ABSTAIN,)
        else:
            choices = tuple(tax.codes) + (ABSTAIN,)
        return Prompt(
            messages=tuple(messages),
            choices=choices,
            prompt_id=prompt_id(),
            tokens=tokens,
            tokens_exact=exact,
            static_prefix=self.static_prefix,
            catalogue=self.catalogue,
            shortlist=used_short,
            examples=tuple(examples[:n_examples]),
            record_truncated=truncated,
            dropped_examples=len(examples) - n_examples,
            info={"candidate_definitions": detailed and bool(used_short)},
        )

    def _messages(
        self, text: str, examples: Sequence[Evidence], shortlist: Sequence[str], detailed: bool
    ) -> list[dict[str, str]]:
        system = self.static_prefix
        if shortlist:
            tax = self.taxonomy
            lines = [_describe(tax[c]) if detailed else f"- {c}" for c in shortlist]
            system += CANDIDATES_TEMPLATE.format(candidates="\n".join(lines))
        messages = [{"role": "system", "content": system}]
        for ex in reversed(list(examples)):  # nearest last, next to the record
            messages.append({"role": "user", "content": RECORD_TEMPLATE.format(text=ex.text)})
            messages.append({"role": "assistant", "content": ex.category})
        messages.append({"role": "user", "content": RECORD_TEMPLATE.format(text=text)})
        return messages
