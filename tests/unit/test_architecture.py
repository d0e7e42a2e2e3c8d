"""The layout is a contract (DESIGN.md): the core and the builders do no I/O and depend on
nothing above them. Read the imports with `ast`, so a violation fails here first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = {
    "sqlmodel", "sqlalchemy", "slack_bolt", "slack_sdk", "stripe", "quickbooks", "intuitlib",
    "hubspot", "openai", "httpx", "httpx2", "requests", "urllib", "smtplib", "imaplib",
    "apscheduler", "psycopg", "os", "time", "socket", "subprocess", "http", "aiosmtpd",
}
OUR_PACKAGES = {"dunning", "store", "services", "bot", "handlers", "blocks", "scheduler",
                "connectors", "bench", "tests"}
ALLOWED = {
    "dunning": {"dunning"},
    "blocks": {"dunning", "blocks"},
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_pure_packages_do_no_io_and_depend_only_downwards(package: str) -> None:
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        names = imports(path)
        for bad in sorted(names & IO_MODULES):
            problems.append(f"{path.relative_to(ROOT)} imports {bad} (I/O)")
        for bad in sorted((names & OUR_PACKAGES) - ALLOWED[package]):
            problems.append(f"{path.relative_to(ROOT)} imports {bad} (layering)")
    assert problems == []


def test_services_never_import_slack_layout_or_listeners() -> None:
    problems = [f"{p.relative_to(ROOT)} imports {bad}"
                for p in sorted((ROOT / "services").rglob("*.py"))
                for bad in sorted(imports(p) & {"blocks", "handlers", "bot", "slack_bolt"})]
    assert problems == []


def test_listeners_do_no_sql_of_their_own() -> None:
    """Handlers call services for every read and write (DESIGN.md: parse -> service)."""
    problems = [f"{p.relative_to(ROOT)} imports {bad}"
                for p in sorted((ROOT / "handlers").rglob("*.py"))
                for bad in sorted(imports(p) & {"sqlmodel", "sqlalchemy"})]
    assert problems == []
