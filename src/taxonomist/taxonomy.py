"""The taxonomy reference document: groups, categories, versions and the operations that change them.

A taxonomy is a human-edited YAML file. Each saved version is identified by a
content hash (`Taxonomy.version_id`) and every operation appends a changelog
entry with date and author. Operations never mutate in place: they return a
`Change` holding the new taxonomy and, where history must follow, the label
mapping to apply to stored records (see `Store.relabel`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TaxonomyError

__all__ = [
    "ABSTAIN",
    "Category",
    "Group",
    "ChangelogEntry",
    "Taxonomy",
    "Change",
    "Crosswalk",
    "load_taxonomy",
    "load_crosswalk",
]

#: The label an engine returns when it will not choose a category.
ABSTAIN = "NONE"

ACTIVE = "active"
RETIRED = "retired"
_STATUSES = (ACTIVE, RETIRED)
# Loose enough for real label sets (BANKING77 has 'reverted_card_payment?' and names of
# 40+ characters); strict enough to stay one token on a command line and in a CSV cell.
_CODE_RE = re.compile(r"^[A-Za-z0-9][^\s\"'`,]{0,79}$")


def _today() -> str:
    return dt.date.today().isoformat()


def _as_list(value: Any, where: str, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        out = []
        for item in value:
            if not isinstance(item, (str, int, float)):
                raise TaxonomyError(f"{where}: '{name}' must be a list of strings, found {type(item).__name__}")
            out.append(str(item))
        return out
    raise TaxonomyError(f"{where}: '{name}' must be a list of strings, found {type(value).__name__}")


@dataclass(frozen=True)
class Category:
    """One category of the taxonomy, with what a reader needs to apply it."""

    code: str
    name: str
    group: str
    definition: str = ""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    source_codes: tuple[str, ...] = ()
    status: str = ACTIVE
    successors: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "name": self.name}
        if self.definition:
            out["definition"] = self.definition
        for key in ("include", "exclude", "examples", "source_codes"):
            value = getattr(self, key)
            if value:
                out[key] = list(value)
        if self.status != ACTIVE:
            out["status"] = self.status
        if self.successors:
            out["successor"] = self.successors[0] if len(self.successors) == 1 else list(self.successors)
        return out

    def describe(self) -> str:
        """Definition text used by retrieval and prompts: name, definition and rules."""
        parts = [f"{self.name}."]
        if self.definition:
            parts.append(self.definition)
        if self.include:
            parts.append("Includes: " + "; ".join(self.include) + ".")
        if self.exclude:
            parts.append("Excludes: " + "; ".join(self.exclude) + ".")
        if self.source_codes:
            parts.append("Typical codes: " + ", ".join(self.source_codes) + ".")
        return " ".join(parts)


@dataclass(frozen=True)
class Group:
    code: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class ChangelogEntry:
    """One recorded operation on the taxonomy."""

    op: str
    date: str
    author: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    version: str = ""  # version id of the taxonomy this entry produced

    def to_dict(self) -> dict[str, Any]:
        out = {"op": self.op, "date": self.date, "author": self.author, "summary": self.summary}
        if self.details:
            out["details"] = dict(self.details)
        if self.version:
            out["version"] = self.version
        return out


@dataclass(frozen=True)
class Change:
    """The outcome of an operation: the new taxonomy and how stored labels follow.

    `relabel` maps old codes to new codes for history that can be moved without
    judgement (rename, merge, retire with one successor). `review` lists codes
    whose history needs a per-record decision (split): their labels stay as they
    are until assigned.
    """

    taxonomy: Taxonomy
    entry: ChangelogEntry
    relabel: Mapping[str, str] = field(default_factory=dict)
    review: tuple[str, ...] = ()


class Taxonomy:
    """An ordered set of groups and categories, with changelog and a content-hash version id."""

    def __init__(
        self,
        *,
        name: str,
        groups: Iterable[Group],
        categories: Iterable[Category],
        changelog: Iterable[ChangelogEntry] = (),
        description: str = "",
        source_code_systems: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.description = description
        self.source_code_systems = tuple(source_code_systems)
        self.groups: tuple[Group, ...] = tuple(groups)
        self.categories: tuple[Category, ...] = tuple(categories)
        self.changelog: tuple[ChangelogEntry, ...] = tuple(changelog)
        self._by_code = {c.code: c for c in self.categories}
        self.validate()

    # ----- lookup -------------------------------------------------------------------
    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __getitem__(self, code: str) -> Category:
        try:
            return self._by_code[code]
        except KeyError:
            raise TaxonomyError(
                f"category '{code}' is not in taxonomy {self.version_id} "
                f"(known: {self._known_codes()}); add it with `taxonomist taxonomy add`"
            ) from None

    def __len__(self) -> int:
        return len(self.active_categories)

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {len(self)} active categories, version={self.version_id})"

    @property
    def active_categories(self) -> tuple[Category, ...]:
        return tuple(c for c in self.categories if c.active)

    @property
    def codes(self) -> tuple[str, ...]:
        """Codes of the active categories, in document order."""
        return tuple(c.code for c in self.active_categories)

    def group_of(self, code: str) -> Group:
        cat = self[code]
        return next(g for g in self.groups if g.code == cat.group)

    def resolve(self, code: str) -> str:
        """Follow successors from a (possibly retired) code to an active one, if unambiguous."""
        seen = set()
        current = self[code]
        while not current.active:
            if current.code in seen or len(current.successors) != 1:
                raise TaxonomyError(
                    f"category '{code}' is retired and has "
                    f"{'no single' if len(current.successors) != 1 else 'a cyclic'} successor; "
                    "assign its records by hand"
                )
            seen.add(current.code)
            current = self[current.successors[0]]
        return current.code

    def _known_codes(self) -> str:
        codes = self.codes
        if len(codes) <= 8:
            return ", ".join(codes)
        return f"{codes[0]}..{codes[-1]}, {len(codes)} in all"

    # ----- versions -----------------------------------------------------------------
    def content(self) -> dict[str, Any]:
        """The document without its changelog: what the version id hashes."""
        groups = []
        for g in self.groups:
            gd: dict[str, Any] = {"code": g.code, "name": g.name}
            if g.description:
                gd["description"] = g.description
            gd["categories"] = [c.to_dict() for c in self.categories if c.group == g.code]
            groups.append(gd)
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.source_code_systems:
            out["source_code_systems"] = list(self.source_code_systems)
        out["groups"] = groups
        return out

    @property
    def version_id(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "v" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        out = self.content()
        out["changelog"] = [e.to_dict() for e in self.changelog]
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | Path) -> str:
        """Write the document; returns its version id."""
        Path(path).write_text(self.to_yaml(), encoding="utf-8")
        return self.version_id

    # ----- validation ---------------------------------------------------------------
    def validate(self) -> None:
        """Raise `TaxonomyError` naming the first category and problem found."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TaxonomyError(problems[0] + more)

    def problems(self) -> list[str]:
        out: list[str] = []
        if not self.name:
            out.append("taxonomy has no 'name'")
        group_codes: set[str] = set()
        for g in self.groups:
            if g.code in group_codes:
                out.append(f"group '{g.code}' appears twice; group codes must be unique")
            group_codes.add(g.code)
        seen: set[str] = set()
        for c in self.categories:
            if not _CODE_RE.match(c.code):
                out.append(
                    f"category code '{c.code}' is invalid: use 1-80 characters starting with a letter or digit, "
                    "without spaces, quotes or commas"
                )
            if c.code == ABSTAIN:
                out.append(f"category code '{ABSTAIN}' is reserved for abstention; choose another code")
            if c.code in seen:
                out.append(f"category '{c.code}' appears twice (duplicate code); codes must be unique")
            seen.add(c.code)
            if not c.name:
                out.append(f"category '{c.code}' has no name")
            if c.group not in group_codes:
                out.append(f"category '{c.code}' is in unknown group '{c.group}'")
            if c.status not in _STATUSES:
                out.append(f"category '{c.code}' has status '{c.status}'; expected one of {', '.join(_STATUSES)}")
        for c in self.categories:
            for s in c.successors:
                if s not in self._by_code:
                    out.append(f"category '{c.code}' names successor '{s}', which is not in the taxonomy")
                elif s == c.code:
                    out.append(f"category '{c.code}' names itself as successor")
            if c.active and c.successors:
                out.append(f"category '{c.code}' is active but has a successor; retire it or drop the successor")
        if not any(c.active for c in self.categories):
            out.append("taxonomy has no active category")
        return out

    # ----- operations ---------------------------------------------------------------
    def _change(
        self,
        categories: Iterable[Category],
        entry: ChangelogEntry,
        *,
        relabel: Mapping[str, str] | None = None,
        review: tuple[str, ...] = (),
    ) -> Change:
        """Build the next version: validate it, stamp its id on the entry, append the entry."""
        draft = Taxonomy(
            name=self.name,
            description=self.description,
            source_code_systems=self.source_code_systems,
            groups=self.groups,
            categories=categories,
        )
        entry = dataclasses.replace(entry, version=draft.version_id)
        draft.changelog = (*self.changelog, entry)
        return Change(draft, entry, relabel=dict(relabel or {}), review=review)

    @staticmethod
    def _entry(op: str, author: str, date: str | None, summary: str, **details: Any) -> ChangelogEntry:
        if not author:
            raise TaxonomyError(f"{op}: an author is required for the changelog (pass --author)")
        return ChangelogEntry(op=op, date=date or _today(), author=author, summary=summary, details=details)

    def _require_active(self, op: str, code: str) -> Category:
        cat = self[code]
        if not cat.active:
            raise TaxonomyError(f"{op}: category '{code}' is retired; it cannot be changed further")
        return cat

    def _require_new(self, op: str, code: str) -> None:
        if code in self._by_code:
            raise TaxonomyError(f"{op}: category '{code}' already exists; choose a new code")

    def add(
        self,
        code: str,
        name: str,
        *,
        group: str,
        author: str,
        definition: str = "",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        examples: Iterable[str] = (),
        source_codes: Iterable[str] = (),
        date: str | None = None,
    ) -> Change:
        """Add a category. History is unchanged."""
        self._require_new("add", code)
        if group not in {g.code for g in self.groups}:
            raise TaxonomyError(
                f"add: group '{group}' is not in the taxonomy (known: {', '.join(g.code for g in self.groups)})"
            )
        cat = Category(
            code=code,
            name=name,
            group=group,
            definition=definition,
            include=tuple(include),
            exclude=tuple(exclude),
            examples=tuple(examples),
            source_codes=tuple(source_codes),
        )
        # Keep document order: after the last category of its group.
        cats = list(self.categories)
        last = max((i for i, c in enumerate(cats) if c.group == group), default=len(cats) - 1)
        cats.insert(last + 1, cat)
        entry = self._entry("add", author, date, f"added {code} '{name}' to group {group}", code=code)
        return self._change(cats, entry)

    def rename(self, code: str, *, author: str, new_code: str | None = None, new_name: str | None = None, date: str | None = None) -> Change:
        """Rename a category's code and/or name. A code change relabels history."""
        cat = self._require_active("rename", code)
        if not new_code and not new_name:
            raise TaxonomyError("rename: give a new code, a new name, or both")
        new_code = new_code or code
        if new_code != code:
            self._require_new("rename", new_code)
        renamed = dataclasses.replace(cat, code=new_code, name=new_name or cat.name)
        cats = []
        for c in self.categories:
            if c.code == code:
                cats.append(renamed)
            elif code in c.successors:
                cats.append(dataclasses.replace(c, successors=tuple(new_code if s == code else s for s in c.successors)))
            else:
                cats.append(c)
        entry = self._entry(
            "rename", author, date, f"renamed {code} to {new_code} '{renamed.name}'",
            code=code, new_code=new_code, old_name=cat.name, new_name=renamed.name,
        )
        relabel = {code: new_code} if new_code != code else {}
        return self._change(cats, entry, relabel=relabel)

    def merge(
        self,
        sources: Iterable[str],
        into: str,
        *,
        author: str,
        name: str | None = None,
        group: str | None = None,
        definition: str = "",
        date: str | None = None,
    ) -> Change:
        """Merge categories A+B→C. C may be one of the sources, an existing category, or new (needs `name`)."""
        sources = list(dict.fromkeys(sources))
        if len(sources) < 2 and (not sources or sources[0] == into):
            raise TaxonomyError("merge: give at least two categories, or one category and a different target")
        for s in sources:
            self._require_active("merge", s)
        cats = list(self.categories)
        if into in self._by_code:
            self._require_active("merge", into)
        else:
            if not name:
                raise TaxonomyError(
                    f"merge: target '{into}' is not in the taxonomy; give --name (and --group) to create it, "
                    "or merge into an existing code"
                )
            first = self[sources[0]]
            target_group = group or first.group
            if target_group not in {g.code for g in self.groups}:
                raise TaxonomyError(f"merge: group '{target_group}' is not in the taxonomy")
            parts = [self[s] for s in sources]
            new = Category(
                code=into,
                name=name,
                group=target_group,
                definition=definition or " ".join(p.definition for p in parts if p.definition),
                include=tuple(x for p in parts for x in p.include),
                exclude=tuple(x for p in parts for x in p.exclude),
                examples=tuple(x for p in parts for x in p.examples),
                source_codes=tuple(dict.fromkeys(x for p in parts for x in p.source_codes)),
            )
            pos = max(i for i, c in enumerate(cats) if c.code in sources)
            cats.insert(pos + 1, new)
        retired = [s for s in sources if s != into]
        cats = [
            dataclasses.replace(c, status=RETIRED, successors=(into,)) if c.code in retired else c for c in cats
        ]
        entry = self._entry("merge", author, date, f"merged {'+'.join(sources)} into {into}", sources=sources, into=into)
        return self._change(cats, entry, relabel={s: into for s in retired})

    def split(
        self,
        code: str,
        into: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        author: str,
        keep: bool = False,
        date: str | None = None,
    ) -> Change:
        """Split A→B,C. `into` maps new codes to names; a new code may equal `code` only with keep=True.

        History labelled A needs a per-record decision; it is returned in `review`.
        With keep=True, A stays active (a category split *out of* A, like a 48th
        category carved from G1) and its history stays where it is.
        """
        cat = self._require_active("split", code)
        parts = dict(into.items() if isinstance(into, Mapping) else into)
        if keep:
            parts.pop(code, None)
            if not parts:
                raise TaxonomyError("split: give at least one new category to split out")
        elif len(parts) < 2:
            raise TaxonomyError("split: give at least two new categories (or use keep to split one out)")
        for new_code in parts:
            self._require_new("split", new_code)
        cats = list(self.categories)
        pos = next(i for i, c in enumerate(cats) if c.code == code)
        new_cats = [
            Category(code=k, name=v, group=cat.group, definition=f"Split from {code} ({cat.name}).")
            for k, v in parts.items()
        ]
        cats[pos + 1 : pos + 1] = new_cats
        if not keep:
            cats[pos] = dataclasses.replace(cat, status=RETIRED, successors=tuple(parts))
        entry = self._entry(
            "split", author, date, f"split {code} into {', '.join(parts)}{' (kept)' if keep else ''}",
            code=code, into=list(parts), keep=keep,
        )
        return self._change(cats, entry, review=() if keep else (code,))

    def retire(self, code: str, *, author: str, successor: str | None = None, date: str | None = None) -> Change:
        """Retire a category; with a successor, its history moves there."""
        self._require_active("retire", code)
        if successor is not None:
            self._require_active("retire", successor)
            if successor == code:
                raise TaxonomyError(f"retire: category '{code}' cannot succeed itself")
        cats = [
            dataclasses.replace(c, status=RETIRED, successors=(successor,) if successor else ()) if c.code == code else c
            for c in self.categories
        ]
        entry = self._entry(
            "retire", author, date, f"retired {code}" + (f" (successor {successor})" if successor else ""),
            code=code, successor=successor,
        )
        return self._change(cats, entry, relabel={code: successor} if successor else {}, review=() if successor else (code,))

    def with_crosswalk(self, crosswalk: Crosswalk, *, author: str, date: str | None = None) -> Change:
        """Record a crosswalk import in the changelog; `relabel` maps their codes to ours."""
        crosswalk.check(self)
        entry = self._entry(
            "crosswalk", author, date,
            f"imported crosswalk from {crosswalk.source}: {len(crosswalk.mapping)} codes onto {len(set(crosswalk.mapping.values()))}",
            source=crosswalk.source, mapping=dict(crosswalk.mapping),
        )
        return self._change(self.categories, entry, relabel=crosswalk.mapping)

    # ----- diff ---------------------------------------------------------------------
    def diff(self, other: Taxonomy) -> list[str]:
        """Human-readable differences from `self` to `other`."""
        lines = []
        mine, theirs = self._by_code, other._by_code
        for code in theirs.keys() - mine.keys():
            lines.append(f"+ {code} {theirs[code].name} [{theirs[code].status}]")
        for code in mine.keys() - theirs.keys():
            lines.append(f"- {code} {mine[code].name}")
        for code in sorted(mine.keys() & theirs.keys()):
            a, b = mine[code], theirs[code]
            for f in dataclasses.fields(Category):
                va, vb = getattr(a, f.name), getattr(b, f.name)
                if va != vb:
                    lines.append(f"~ {code}.{f.name}: {_short(va)} -> {_short(vb)}")
        return sorted(lines, key=lambda s: (s[2:].split()[0], s[0]))

    # ----- loading ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "taxonomy") -> Taxonomy:
        if not isinstance(data, Mapping):
            raise TaxonomyError(f"{source}: expected a mapping with 'name' and 'groups' at the top level")
        groups_raw = data.get("groups")
        if not isinstance(groups_raw, list) or not groups_raw:
            raise TaxonomyError(f"{source}: 'groups' must be a non-empty list of groups, each with 'categories'")
        groups, cats = [], []
        for gi, g in enumerate(groups_raw, 1):
            if not isinstance(g, Mapping) or "code" not in g:
                raise TaxonomyError(f"{source}: group #{gi} needs a 'code' and a 'name'")
            gcode = str(g["code"])
            groups.append(Group(code=gcode, name=str(g.get("name", gcode)), description=str(g.get("description", ""))))
            for ci, c in enumerate(g.get("categories") or [], 1):
                where = f"{source}: group {gcode}, category #{ci}"
                if not isinstance(c, Mapping) or "code" not in c:
                    raise TaxonomyError(f"{where} needs a 'code' and a 'name'")
                code = str(c["code"])
                where = f"{source}: category '{code}'"
                unknown = set(c) - {f.name for f in dataclasses.fields(Category)} - {"successor"}
                if unknown:
                    raise TaxonomyError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
                succ = c.get("successor", c.get("successors"))
                cats.append(
                    Category(
                        code=code,
                        name=str(c.get("name", "")),
                        group=gcode,
                        definition=str(c.get("definition", "") or "").strip(),
                        include=tuple(_as_list(c.get("include"), where, "include")),
                        exclude=tuple(_as_list(c.get("exclude"), where, "exclude")),
                        examples=tuple(_as_list(c.get("examples"), where, "examples")),
                        source_codes=tuple(_as_list(c.get("source_codes"), where, "source_codes")),
                        status=str(c.get("status", ACTIVE)),
                        successors=tuple(_as_list(succ, where, "successor")),
                    )
                )
        changelog = []
        for ei, e in enumerate(data.get("changelog") or [], 1):
            if not isinstance(e, Mapping) or "op" not in e:
                raise TaxonomyError(f"{source}: changelog entry #{ei} needs 'op', 'date', 'author'")
            changelog.append(
                ChangelogEntry(
                    op=str(e["op"]),
                    date=str(e.get("date", "")),
                    author=str(e.get("author", "")),
                    summary=str(e.get("summary", "")),
                    details=dict(e.get("details") or {}),
                    version=str(e.get("version", "")),
                )
            )
        try:
            return cls(
                name=str(data.get("name", "")),
                description=str(data.get("description", "") or "").strip(),
                source_code_systems=_as_list(data.get("source_code_systems"), source, "source_code_systems"),
                groups=groups,
                categories=cats,
                changelog=changelog,
            )
        except TaxonomyError as exc:
            raise TaxonomyError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "taxonomy") -> Taxonomy:
        """Parse a taxonomy document; bounded (size, aliases) and strict (duplicate keys), see `taxonomist._yaml`."""
        from ._yaml import safe_load

        return cls.from_dict(safe_load(text, source=source, error=TaxonomyError), source=source)

    @classmethod
    def from_labels(cls, labels: Iterable[str], *, name: str = "labels") -> Taxonomy:
        """A flat taxonomy from bare label names (datasets with no document, e.g. BANKING77)."""
        codes = sorted(set(map(str, labels)))
        return cls(
            name=name,
            groups=[Group(code="ALL", name="All")],
            categories=[Category(code=c, name=c.replace("_", " "), group="ALL") for c in codes],
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a taxonomy YAML file; errors name the file and the category."""
    p = Path(path)
    if not p.is_file():
        raise TaxonomyError(f"taxonomy file '{p}' does not exist")
    from ._yaml import read_yaml_file

    return Taxonomy.from_dict(read_yaml_file(p, error=TaxonomyError, what="taxonomy file"), source=str(p))


@dataclass(frozen=True)
class Crosswalk:
    """Another organisation's codes mapped onto ours (one-to-one or many-to-one)."""

    source: str
    mapping: Mapping[str, str]
    #: Their codes that cover more than one of ours ({their code: [our candidates]}): records imported
    #: under them get the mapped label and a review item (reason `ambiguous_crosswalk`).
    ambiguous: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def check(self, taxonomy: Taxonomy) -> None:
        if not self.mapping:
            raise TaxonomyError(f"crosswalk from {self.source} maps no codes")
        for theirs, ours in self.mapping.items():
            if ours not in taxonomy:
                raise TaxonomyError(
                    f"crosswalk from {self.source}: their code '{theirs}' maps to '{ours}', "
                    f"which is not in taxonomy {taxonomy.version_id}; fix the crosswalk or add the category"
                )
            if not taxonomy[ours].active:
                raise TaxonomyError(
                    f"crosswalk from {self.source}: their code '{theirs}' maps to retired category '{ours}'; "
                    f"map it to {', '.join(taxonomy[ours].successors) or 'an active category'}"
                )

    def translate(self, code: str) -> str:
        try:
            return self.mapping[code]
        except KeyError:
            raise TaxonomyError(
                f"crosswalk from {self.source} has no mapping for their code '{code}'; add a row for it"
            ) from None

    @property
    def merges(self) -> dict[str, list[str]]:
        """Our codes that receive two or more of their codes."""
        out: dict[str, list[str]] = {}
        for theirs, ours in self.mapping.items():
            out.setdefault(ours, []).append(theirs)
        return {k: v for k, v in out.items() if len(v) > 1}


def load_crosswalk(path: str | Path, *, source: str | None = None) -> Crosswalk:
    """Read a crosswalk: YAML (`source:`, `mapping: {theirs: ours}`) or CSV (`their_code,our_code`)."""
    p = Path(path)
    if not p.is_file():
        raise TaxonomyError(f"crosswalk file '{p}' does not exist")
    if p.suffix.lower() == ".csv":
        import csv

        mapping: dict[str, str] = {}
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            need = {"their_code", "our_code"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise TaxonomyError(f"crosswalk '{p}': expected columns their_code,our_code; found {reader.fieldnames}")
            for line, row in enumerate(reader, 2):
                theirs, ours = (row["their_code"] or "").strip(), (row["our_code"] or "").strip()
                if not theirs or not ours:
                    raise TaxonomyError(f"crosswalk '{p}' line {line}: both their_code and our_code are required")
                if theirs in mapping and mapping[theirs] != ours:
                    raise TaxonomyError(
                        f"crosswalk '{p}' line {line}: their code '{theirs}' is mapped twice "
                        f"({mapping[theirs]} and {ours}); one-to-many is not a crosswalk, split the category first"
                    )
                mapping[theirs] = ours
        return Crosswalk(source=source or p.stem, mapping=mapping)
    from ._yaml import read_yaml_file

    data = read_yaml_file(p, error=TaxonomyError, what="crosswalk file") or {}
    if not isinstance(data, Mapping) or not isinstance(data.get("mapping"), Mapping):
        raise TaxonomyError(f"crosswalk '{p}': expected 'mapping: {{their_code: our_code}}'")
    ambiguous = data.get("ambiguous") or {}
    if not isinstance(ambiguous, Mapping):
        raise TaxonomyError(f"crosswalk '{p}': 'ambiguous' must map their code to a list of our candidate codes")
    return Crosswalk(
        source=source or str(data.get("source", p.stem)),
        mapping={str(k): str(v) for k, v in data["mapping"].items()},
        ambiguous={str(k): tuple(str(x) for x in (v if isinstance(v, (list, tuple)) else [v])) for k, v in ambiguous.items()},
    )
