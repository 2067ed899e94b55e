"""`dealflow pipelines list`: what `GET /v1/pipelines` answers, from the command line."""

from __future__ import annotations

import argparse
import json


def register(pipelines: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    listing = pipelines.add_parser("list", help="list pipelines: id, name and current version")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_pipelines_list)


def _pipelines_list(args: argparse.Namespace) -> int:
    from engine.definition_list import DefinitionList
    from engine.domain.definitions import PIPELINE
    from engine.runtime import build_services

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
