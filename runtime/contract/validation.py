"""A pydantic ValidationError as one readable line: what the CLI prints for a bad line config or manifest.

    describe_validation_error(exc)   # "batching.max_batch: Input should be greater than or equal to 1 (got 0)"
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, origins: Mapping[str, str] | None = None, whole: str = "config") -> str:
    """One line per problem, each led by the dotted field path (``batching.max_batch: ...``) and, where
    ``origins`` names where a field's value came from, that (``batching.max_batch (--max-batch): ...``)."""
    lines = []
    for e in error.errors():
        where = ".".join(str(x) for x in e["loc"]) or whole
        value = e.get("input")
        by = _origins_of(where, origins) if e["loc"] else ""
        if not e["loc"]:  # a check across fields: its message names them
            lines.append(e["msg"].removeprefix("Value error, "))
        elif e["type"] == "extra_forbidden":
            lines.append(f"{where}{by}: unknown field")
        elif e["type"] != "missing" and isinstance(value, str | int | float | bool | None):
            lines.append(f"{where}{by}: {e['msg'].removeprefix('Value error, ')} (got {value!r})")
        else:
            lines.append(f"{where}{by}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def _origins_of(where: str, origins: Mapping[str, str] | None) -> str:
    """`` (--flag)`` for the overridden fields at, inside or above the failing one; '' for the file's own."""
    found = [origin for path, origin in (origins or {}).items()
             if path == where or where.startswith(path + ".") or path.startswith(where + ".")]
    return f" ({', '.join(dict.fromkeys(found))})" if found else ""
