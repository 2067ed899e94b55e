"""`dealflow serve`'s neighbours that manage the store: `tokens`, `pipelines`, `migrate`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dealflow.runtime import build_services


@contextmanager
def _token_store() -> Iterator[Any]:
    # Tokens need the store only: no read models, no automation.
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings
    from engine.tokens import TokenStore

    app = DealflowApp(StoreSettings.from_env())
    try:
        yield TokenStore(app.db)
    finally:
        app.close()


def _tokens_create(args: argparse.Namespace) -> int:
    from engine.tokens import parse_duration

    lifetime = parse_duration(args.expires_in) if args.expires_in else None
    with _token_store() as store:
        token = store.create(
            args.name,
            [s.strip() for s in args.scopes.split(",") if s.strip()],
            expires_in=lifetime,
            rate_limit=args.rate_limit,
        )
    print(token)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    with _token_store() as store:
        tokens = store.list()
    if args.json:
        for token in tokens:
            print(json.dumps(token))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "scopes", "created", "expires", "rate/min", "last used", "state")
    for t in tokens:
        state = "revoked" if t["revoked_at"] else ("active" if t["active"] else "expired")
        table.add_row(
            str(t["name"]),
            ",".join(t["scopes"]),  # type: ignore[arg-type]
            str(t["created_at"]),
            str(t["expires_at"] or "never"),
            str(t["rate_limit_per_minute"] or "-"),
            str(t["last_used_at"] or "never"),
            state,
        )
    Console(width=200).print(table)
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    with _token_store() as store:
        count = store.revoke(args.name)
    print(f"revoked {count} token(s) named {args.name!r}")
    return 0 if count else 1


def load_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _pipelines_apply(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from engine.domain.pipeline import PipelineDefinition

    document = load_document(Path(args.file))
    pipeline_id = (
        args.id
        or (document.pop("id", None) if isinstance(document, dict) else None)
        or Path(args.file).stem
    )
    try:
        definition = PipelineDefinition.model_validate(document)
    except ValidationError as error:
        print(f"{args.file}: invalid pipeline definition", file=sys.stderr)
        for item in error.errors():
            print(f"  {'.'.join(str(p) for p in item['loc'])}: {item['msg']}", file=sys.stderr)
        return 2
    services = build_services(run_projections=False)
    version = services.app.put_pipeline(pipeline_id, definition, "cli")
    print(f"pipeline {pipeline_id!r} is at version {version}")
    return 0


def _pipelines_show(args: argparse.Namespace) -> int:
    from engine.domain.definitions import PIPELINE

    version, body = build_services(run_projections=False).app.get_definition(PIPELINE, args.id)
    print(yaml.safe_dump({"id": args.id, "version": version, **body}, sort_keys=False))
    return 0


def _pipelines_list(args: argparse.Namespace) -> int:
    from engine.definition_list import DefinitionList
    from engine.domain.definitions import PIPELINE

    services = build_services(run_projections=False)
    listing = DefinitionList(services.app)
    cursor: str | None = None
    rows: list[dict[str, object]] = []
    while True:
        page = listing.page(PIPELINE, after=cursor, limit=500)
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    if args.json:
        for row in rows:
            print(
                json.dumps(
                    {"pipeline_id": row["id"], "name": row["name"], "version": row["version"]}
                )
            )
    else:
        width = max([len("PIPELINE")] + [len(str(r["id"])) for r in rows])
        print(f"{'PIPELINE':<{width}}  VERSION  NAME")
        for row in rows:
            print(f"{row['id']!s:<{width}}  {row['version']!s:>7}  {row['name'] or ''}")
    services.close()
    return 0


def _migrate(_: argparse.Namespace) -> int:
    """Create every table once, before replicas start (concurrent CREATE IF NOT EXISTS can race)."""

    services = build_services(run_projections=False)
    print(f"store ready ({services.settings.backend}), log position {services.app.max_position()}")
    services.close()
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    commands.add_parser(
        "migrate", help="create the store's tables (run once before starting replicas)"
    ).set_defaults(func=_migrate)

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated: ingest,read,audit,admin")
    create.add_argument("--expires-in", help="lifetime, e.g. 30d, 12h, 90m (default: never)")
    create.add_argument(
        "--rate-limit", type=int, help="requests per minute (per API process; default: none)"
    )
    create.set_defaults(func=_tokens_create)
    listing = tokens.add_parser(
        "list", help="list tokens: scopes, expiry, rate limit, last use (never their values)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke every token with a name")
    revoke.add_argument("--name", required=True)
    revoke.set_defaults(func=_tokens_revoke)

    pipelines = commands.add_parser("pipelines", help="pipeline definitions").add_subparsers(
        dest="pipelines_command", required=True
    )
    apply = pipelines.add_parser(
        "apply", help="create or replace a pipeline from a YAML or JSON file"
    )
    apply.add_argument("file")
    apply.add_argument("--id", help="pipeline id (default: the file's `id` key, else its name)")
    apply.set_defaults(func=_pipelines_apply)
    show = pipelines.add_parser("show", help="print a pipeline definition")
    show.add_argument("id")
    show.set_defaults(func=_pipelines_show)
    listing = pipelines.add_parser("list", help="list pipelines: id, name and current version")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_pipelines_list)
