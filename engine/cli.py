"""`dealflow`: the command line. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engine.api.app import create_app
    from engine.runtime import build_services

    services = build_services(run_projections=not args.no_projections)
    app = create_app(services)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    services.close()
    return 0


def _tokens_create(args: argparse.Namespace) -> int:
    from engine.runtime import build_services

    services = build_services(run_projections=False)
    token = services.tokens.create(
        args.name, [s.strip() for s in args.scopes.split(",") if s.strip()]
    )
    print(token)
    return 0


def _tokens_list(_: argparse.Namespace) -> int:
    from engine.runtime import build_services

    for token in build_services(run_projections=False).tokens.list():
        print(json.dumps(token))
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    from engine.runtime import build_services

    count = build_services(run_projections=False).tokens.revoke(args.name)
    print(f"revoked {count} token(s) named {args.name!r}")
    return 0 if count else 1


def load_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _pipelines_apply(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from engine.domain.pipeline import PipelineDefinition
    from engine.runtime import build_services

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
    from engine.runtime import build_services

    version, body = build_services(run_projections=False).app.get_definition(PIPELINE, args.id)
    print(yaml.safe_dump({"id": args.id, "version": version, **body}, sort_keys=False))
    return 0


def _migrate(_: argparse.Namespace) -> int:
    """Create every table once, before replicas start (concurrent CREATE IF NOT EXISTS can race)."""
    from engine.runtime import build_services

    services = build_services(run_projections=False)
    print(f"store ready ({services.settings.backend}), log position {services.app.max_position()}")
    services.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dealflow", description="Event-sourced sales pipeline engine."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (and, by default, the projections)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--no-projections",
        action="store_true",
        help="leave read models to `dealflow projections run`",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    commands.add_parser(
        "migrate", help="create the store's tables (run once before starting replicas)"
    ).set_defaults(func=_migrate)

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated: ingest,read,audit,admin")
    create.set_defaults(func=_tokens_create)
    tokens.add_parser("list", help="list tokens (names and scopes)").set_defaults(func=_tokens_list)
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

    bench = commands.add_parser(
        "bench", help="benchmarks that print figures against a same-run baseline"
    )
    benches = bench.add_subparsers(dest="bench_command", required=True)

    from engine import bench_ingest
    from engine.audit import cli as audit_cli
    from projections import cli as projections_cli
    from projections import cli_demo
    from workflows import cli as workflows_cli

    bench_ingest.register(benches)
    from dealflow.bench import chaos as chaos_bench  # issue 9; joins dealflow/bench (issue 8)

    chaos_bench.register(benches)
    for area in (projections_cli, cli_demo, workflows_cli, audit_cli):
        area.register(commands, benches)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        code = 130
    except Exception as error:
        from engine.domain.errors import DomainError

        if not isinstance(error, DomainError):
            raise
        print(f"error: {error.message}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalisation: the Temporal SDK's native threads can crash it
    # (exit 139) after a clean shutdown, which would make a successful command look failed.
    os._exit(code)


if __name__ == "__main__":
    main()
