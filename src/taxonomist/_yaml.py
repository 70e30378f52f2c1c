"""The one bounded YAML reader: size-limited, alias expansion capped, duplicate keys refused, no Python tags.

Every YAML document taxonomist reads (taxonomies, crosswalks, price tables)
goes through `safe_load`, so a hostile or mistaken file fails fast with one
line instead of eating memory ("billion laughs": a 40 KB file of nested
aliases expands to billions of nodes) or silently keeping the last of two
duplicate keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import TaxonomistError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_NODES", "safe_load", "read_yaml_file"]

#: Larger YAML documents are refused (a 47-category taxonomy is ~20 KB).
MAX_YAML_BYTES = 5 * 1024 * 1024
#: A document may hold at most this many nodes once its aliases are expanded.
MAX_YAML_NODES = 200_000


def read_yaml_file(path: str | Path, *, error: type[TaxonomistError] = TaxonomistError, what: str = "YAML file") -> Any:
    """Parse a YAML file with `safe_load`; the size is checked before anything is read."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise error(f"{what} '{p}' is {size:,} bytes; the limit is {MAX_YAML_BYTES:,} (5 MB): is it the right file?")
    return safe_load(p.read_text(encoding="utf-8"), source=str(p), error=error)


def safe_load(text: str, *, source: str, error: type[TaxonomistError] = TaxonomistError) -> Any:
    """Parse one YAML document with PyYAML's safe constructors, bounded.

    Raises `error` (one line naming `source`) for a document over
    `MAX_YAML_BYTES`, aliases expanding to more than `MAX_YAML_NODES` nodes,
    a key given twice in one mapping (both line numbers), a tag such as
    ``!!python/object``, or invalid YAML.
    """
    import yaml

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise error(f"{source}: the YAML document is {size:,} bytes; the limit is {MAX_YAML_BYTES:,} (5 MB)")
    loader = _loader_class()(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            expanded = _expanded_size(node)
            if expanded > MAX_YAML_NODES:
                raise error(
                    f"{source}: YAML aliases (*name) expand to more than {MAX_YAML_NODES:,} nodes "
                    "(an alias bomb?); write the document out without nested aliases"
                )
            return loader.construct_document(node)
        except _DuplicateKey as exc:
            raise error(f"{source}: {exc}") from None
        except yaml.constructor.ConstructorError as exc:
            raise error(f"{source}: {_first_line(exc)}; only plain YAML (maps, lists, text, numbers) is read") from None
        except yaml.YAMLError as exc:
            raise error(f"{source}: not valid YAML: {_first_line(exc)}") from None
    finally:
        loader.dispose()


class _DuplicateKey(Exception):
    pass


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _expanded_size(root: Any) -> int:
    """Nodes in the document with every alias expanded, counted without expanding (memoised per node)."""
    import yaml

    sizes: dict[int, int] = {}
    # Post-order walk without recursion; an alias is the same node object reached twice.
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if done:
            total = 1
            for c in children:
                total += sizes.get(id(c), 0)
                if total > MAX_YAML_NODES:
                    break
            sizes[key] = total
            continue
        sizes[key] = 0  # a recursive alias (a node inside itself) counts nothing more
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


_LOADER: type | None = None


def _loader_class() -> type:
    global _LOADER
    if _LOADER is None:
        import yaml

        class _BoundedLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    seen: dict[Any, int] = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                            continue
                        key = self.construct_object(key_node, deep=False)
                        line = key_node.start_mark.line + 1
                        try:
                            first = seen.get(key)
                        except TypeError:  # an unhashable key: PyYAML refuses it itself
                            continue
                        if first is not None:
                            raise _DuplicateKey(
                                f"key '{_short(key)}' appears twice in one mapping (lines {first} and {line}); "
                                "keep one of them"
                            )
                        seen[key] = line
                return super().construct_mapping(node, deep=deep)

        _LOADER = _BoundedLoader
    return _LOADER


def _short(key: Any, limit: int = 40) -> str:
    text = str(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."
