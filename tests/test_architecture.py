"""The layout is the architecture: imports only point down the package list in
docs/architecture.md. This test reads every module's imports (ast, no execution)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "bus": set(),
    "tools": {"bus"},
    "tasks": {"bus"},
    "env_server": {"bus", "tools", "tasks"},
    "agents": {"bus", "tools", "tasks"},
    # runs are `mlgym run` / `mlgym resume` subprocesses: never env_server internals
    "sweep": {"bus", "tasks", "agents"},
    "viewer": {"bus", "tasks"},  # reads run folders; never agents or env_server internals
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mlgym" and len(parts) > 1 and parts[1] in ALLOWED:
                out.add(parts[1])
    return out


def test_imports_point_one_way():
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if "workspace" in path.parts:  # task starter files are not framework code
                continue
            bad = imported_packages(path) - allowed - {package}
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_agents_never_reach_into_env_server():
    for path in (ROOT / "agents").rglob("*.py"):
        assert "env_server" not in path.read_text(), f"{path} mentions env_server"


def test_a_subcommand_that_cannot_load_says_why(monkeypatch):
    # the CLI loads subcommands lazily; one whose module is missing (an optional extra) must
    # still answer with a clear message, not crash
    from click.testing import CliRunner

    from mlgym import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", "mlgym_no_such_module:cmd")
    result = CliRunner().invoke(cli.cli, ["broken"])
    assert result.exit_code == 1
    assert "`mlgym broken` is unavailable: No module named 'mlgym_no_such_module'" in result.output
