"""Generated tables in the README: each lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
markers and is rewritten by the command that measures it, never edited by hand.

Usage::

    write_readme_table("README.md", table, "eval-table")        # replace what is between the markers
    if readme_lacks_markers("int8-table"): ...                  # checked before a long run, not after
    publish_table(table, report, "artifacts/eval/x.json", "int8-table", update_readme=True)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
README_TABLE = "eval-table"  # the full chain's table; ablations (`eval --all --without F`) get eval-table-without-F


def readme_markers(name: str = README_TABLE) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


README_START, README_END = readme_markers()


def replace_between_markers(text: str, table: str, start: str = README_START, end: str = README_END) -> str:
    """``text`` with everything between the two markers replaced by ``table`` (markers kept)."""
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {start!r} and one {end!r} in the README")
    if text.index(end) < text.index(start):
        raise ValueError(f"{end!r} comes before {start!r}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{table.rstrip()}\n{end}{tail}"


def write_readme_table(readme: str | Path, table: str, name: str = README_TABLE) -> None:
    path = Path(readme)
    path.write_text(replace_between_markers(path.read_text(), table, *readme_markers(name)))


def readme_lacks_markers(name: str, readme: str | Path = REPO_ROOT / "README.md") -> bool:
    """Whether ``readme`` lacks exactly one pair of the ``name`` table's markers, start before end (checked
    before a long run)."""
    try:
        check_readme(readme, name)
    except ValueError:
        return True
    return False


def publish_table(table: str, report: BaseModel, json_path: str | Path, name: str, update_readme: bool) -> None:
    """Print a generated table, write its report as JSON and, asked to, put the table between the README's
    ``name`` markers (the tables of `make int8-checks`, `make groundings`)."""
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=2))
    print(table)
    if update_readme:
        write_readme_table(REPO_ROOT / "README.md", table, name)


def check_readme(readme: str | Path, name: str = README_TABLE) -> None:
    """Fail before an hour of evaluation, not after, when the README lacks its markers."""
    replace_between_markers(Path(readme).read_text(), "", *readme_markers(name))
