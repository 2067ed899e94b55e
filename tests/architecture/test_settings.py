"""One settings model: every environment variable the product reads is a field of
``engine.settings.Settings``, and the README's settings table lists exactly those, with the
model's defaults."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.settings import Settings, _names, environment_variables

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("engine", "projections", "workflows", "dealflow")
ENV_NAME = re.compile(r"^(DATABASE_URL|DEALFLOW_[A-Z0-9_]+|TEMPORAL_[A-Z0-9_]+|OTEL_[A-Z0-9_]+)$")
ROW = re.compile(r"^\| (`[A-Z0-9_]+`(?: or `[A-Z0-9_]+`)*) \| (.*?) \| (.*) \|$")


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_every_variable_named_in_the_code_is_in_the_model() -> None:
    known = set(environment_variables())
    named: dict[str, str] = {}
    for area in AREAS:
        for path in (ROOT / area).rglob("*.py"):
            for literal in _string_literals(path):
                if ENV_NAME.match(literal):
                    named.setdefault(literal, str(path.relative_to(ROOT)))
    assert named, "the scan found nothing: it is broken"
    unknown = {name: where for name, where in named.items() if name not in known}
    assert not unknown, f"read outside engine.settings.Settings: {unknown}"


def test_nothing_but_the_model_reads_the_environment() -> None:
    readers = []
    for area in AREAS:
        for path in (ROOT / area).rglob("*.py"):
            if path == ROOT / "engine" / "settings.py":
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in ("os.environ.get(", "os.getenv(", 'os.environ["'):
                if pattern in text:
                    readers.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not readers, readers


def _readme_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            names = tuple(re.findall(r"`([A-Z0-9_]+)`", match.group(1)))
            rows[names[0]] = (match.group(2), match.group(3))
            for other in names[1:]:
                rows[other] = rows[names[0]]
    return rows


def test_the_readme_table_lists_exactly_the_model_with_its_defaults() -> None:
    rows = _readme_rows()
    assert set(rows) == set(environment_variables())
    for info in Settings.model_fields.values():
        names = _names(info.validation_alias)
        default, description = rows[names[0]]
        assert description == info.description, names[0]
        if info.default is None:
            assert default == "—", names[0]
        elif isinstance(info.default, bool):
            assert default == f"`{str(info.default).lower()}`", names[0]
        elif info.default == "":
            assert default == "(empty)", names[0]
        else:
            assert default == f"`{info.default}`", names[0]


def test_the_model_reads_an_environment_and_refuses_bad_values() -> None:
    settings = Settings.load(
        {"DEALFLOW_DB_POOL_SIZE": "7", "TEMPORAL_TLS_CERT": "/c.pem", "DATABASE_URL": "", "X": "1"}
    )
    assert settings.db_pool_size == 7 and str(settings.temporal_tls_cert) == "/c.pem"
    assert settings.database_url is None  # empty means unset
    with pytest.raises(ValidationError, match="DEALFLOW_DB_POOL_SIZE"):
        Settings.load({"DEALFLOW_DB_POOL_SIZE": "many"})
    with pytest.raises(ValidationError, match="DEALFLOW_LOG_FORMAT"):
        Settings.load({"DEALFLOW_LOG_FORMAT": "xml"})
