"""Tables of the deal read models, for PostgreSQL and SQLite.

Times are integer microseconds since the epoch and money integer micro-units on both databases,
so the read-side SQL is the same on both and its arithmetic is exact.
"""

from __future__ import annotations

CURRENT_TABLE = "rm_deals"
HISTORY_TABLE = "rm_deal_history"
STAYS_TABLE = "rm_stage_stays"
PIPELINES_TABLE = "rm_pipelines"
# Pre-aggregated figures, maintained by the fold in the same transaction as the rows above (and
# so exactly once): what the "now" metrics, breakdown and board read instead of scanning.
STATS_TABLE = "rm_stage_stats"  # per (pipeline, stage): open/closed totals and stay totals
KEYS_TABLE = "rm_breakdown"  # per (pipeline, attribute, value): the breakdown's counters
VISITS_TABLE = "rm_visit_sets"  # per (pipeline, set of stages visited, ever won): deal counts
WON_TABLE = "rm_won_buckets"  # per (pipeline, whole days from open to won): won deal counts
# Closed deals now per (pipeline, day closed, status, whole days from open to close for the
# won, 0 for the lost): a closed window sums its whole days here and reads only its two edge
# days' rows (an index range over every close in the window grew with the data's density).
CLOSED_TABLE = "rm_closed_days"
CLOSED_COUNTERS = ("n", "units", "dur_ms")  # dur_ms: sum of (closed_at - opened_at) / 1000
SUMMARY_TABLES = (STATS_TABLE, KEYS_TABLE, VISITS_TABLE, WON_TABLE, CLOSED_TABLE)
# The same counters as changes in business time (see timeline.py): what "as of" questions, and
# "now" questions over pipelines with events after now, sum instead of scanning the history.
T_STATS_TABLE = "rm_stage_stats_t"
T_KEYS_TABLE = "rm_breakdown_t"
T_VISITS_TABLE = "rm_visit_sets_t"
T_WON_TABLE = "rm_won_buckets_t"
# Open, unflagged deals now, per (pipeline, stage, day they entered the stage), in the same
# three bucket sizes: the stale count "now" (entered before now - limit) without a scan.
OPEN_ENTERED_TABLE = "rm_open_entered"
TIMELINE_TABLES = (T_STATS_TABLE, T_KEYS_TABLE, T_VISITS_TABLE, T_WON_TABLE, OPEN_ENTERED_TABLE)
# Per (pipeline, definition version): the earliest business time of a history row using it.
VERSIONS_TABLE = "rm_pipeline_versions"
VIEW_TABLES = (
    CURRENT_TABLE,
    HISTORY_TABLE,
    STAYS_TABLE,
    PIPELINES_TABLE,
    *SUMMARY_TABLES,
    *TIMELINE_TABLES,
    VERSIONS_TABLE,
)
META_TABLE = "rm_schema"
# Bumped whenever the tables change shape: an older schema is dropped and rebuilt from the log.
SCHEMA_VERSION = 7

STATS_COUNTERS = (
    "deals",
    "open_n",
    "open_units",
    "open_ms",  # sum of opened_at / 1000 (truncated) over open deals
    "open_us",  # sum of opened_at % 1000 over open deals (so the ages are exact microseconds)
    "open_flagged",
    "won_n",
    "won_units",
    "won_ms",  # sum of (closed_at - opened_at) / 1000 over won deals
    "lost_n",
    "entered",
    "advanced",
    "completed",
    "stay_ms",  # sum of (left_at - entered_at) / 1000 over completed stays
)
KEYS_COUNTERS = ("deals", "open_n", "won_n", "lost_n", "won_units", "won_ms")

_DEAL_BODY = """
    deal_id {text} NOT NULL,
    pipeline_id {text} NOT NULL,
    pipeline_version {int},
    name {text} NOT NULL,
    stage {text} NOT NULL,
    status {text} NOT NULL,
    amount {text},
    amount_units {big},
    currency {text} NOT NULL,
    owner {text},
    account {text},
    industry {text},
    lead_source {text},
    decision_maker_role {text},
    opened_at {big} NOT NULL,
    stage_entered_at {big} NOT NULL,
    closed_at {big},
    lost_reason {text},
    flagged_stale {small} NOT NULL,
    version {int} NOT NULL,
    position {big} NOT NULL,
    country {text},
    expected_close {text},
    unqualified {small} NOT NULL"""


# History rows valid for some time: a row whose validity ended at the instant it began (events
# at one instant: the CRM import opens a deal and moves it on at the same time, and walks a won
# deal through the stages between in one instant) is valid at no moment, so the indexes that
# walk rows valid at a moment leave it out (at the CRM export x10, 505k of 635k open rows).
# A statement over such an index repeats this condition (implied by valid_from <= T < valid_to,
# but the planner needs it spelled out to use the partial index).
LASTING = "(valid_to IS NULL OR valid_to > valid_from)"


def _ddl(uuid: str, text: str, int_: str, big: str, small: str, covering: bool) -> list[str]:
    body = _DEAL_BODY.format(text=text, int=int_, big=big, small=small)

    def include(columns: str) -> str:
        """Columns an index carries for index-only scans (PostgreSQL; SQLite has no INCLUDE)."""
        return f" INCLUDE ({columns})" if covering else ""

    counters = ", ".join(f"{c} {big} NOT NULL" for c in STATS_COUNTERS)
    key_counters = ", ".join(f"{c} {big} NOT NULL" for c in KEYS_COUNTERS)
    return [
        f"CREATE TABLE IF NOT EXISTS {CURRENT_TABLE} (deal_uuid {uuid} PRIMARY KEY,{body},"
        f" stay_seq {int_} NOT NULL, visited {text} NOT NULL, advanced {text} NOT NULL,"
        f" last_event_at {big} NOT NULL, ever_won {small} NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_board"
        f" ON {CURRENT_TABLE} (pipeline_id, status, stage, stage_entered_at, deal_id)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_newest ON {CURRENT_TABLE} (opened_at, deal_id)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_pipeline_newest"
        f" ON {CURRENT_TABLE} (pipeline_id, opened_at, deal_id)",
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (deal_uuid {uuid} NOT NULL,{body},"
        f" valid_from {big} NOT NULL, valid_to {big}, visited {text} NOT NULL,"
        f" ever_won {small} NOT NULL, PRIMARY KEY (deal_uuid, version))",
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_asof ON {HISTORY_TABLE} (pipeline_id, valid_from)",
        # The rows a day's partial "as of" sum subtracts (their validity ended that day).
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_ends ON {HISTORY_TABLE} (pipeline_id, valid_to)",
        # The board as of a time: open rows of a stage in board order (rows valid for no time
        # at all left out, see LASTING). Covering the validity
        # and the key, so the rows no longer (or not yet) valid at the moment are skipped in the
        # index (thousands before a page, fetched from the heap one by one before) and only
        # the page's rows are read from the table.
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_board_lasting ON {HISTORY_TABLE}"
        f" (pipeline_id, stage, stage_entered_at, deal_id)"
        f"{include('valid_from, valid_to, deal_uuid, version')} WHERE status = 'open'"
        f" AND {LASTING}",
        # Open unqualified deals as of a time (few): without reading every row valid then
        # (588 ms of the metrics as of a moment at a million deals).
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_unqualified ON {HISTORY_TABLE}"
        f" (pipeline_id, valid_from, valid_to, amount_units)"
        f" WHERE status = 'open' AND unqualified = 1",
        # The median of the days to close won as of a time: the exact values inside the
        # median's day bucket, walked with an OFFSET. Covering (both times and the validity), so
        # the walk reads the index alone: at a million deals a day bucket holds ~10k won rows,
        # and fetching each from the heap cost most of the answer.
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_won_dur_cover"
        f" ON {HISTORY_TABLE} (pipeline_id, (closed_at - opened_at))"
        f"{include('closed_at, opened_at, valid_from, valid_to')} WHERE status = 'won'",
        # The stale count as of a time: the open, unflagged rows that began within the largest
        # stage limit before it (tens of thousands at a million deals), read from the index
        # alone instead of from the heap row by row.
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_open_lasting ON {HISTORY_TABLE}"
        f" (pipeline_id, valid_from){include('valid_to, stage, stage_entered_at')}"
        f" WHERE status = 'open' AND flagged_stale = 0 AND {LASTING}",
        f"CREATE TABLE IF NOT EXISTS {STAYS_TABLE} (deal_uuid {uuid} NOT NULL, seq {int_} NOT NULL,"
        f" pipeline_id {text} NOT NULL, stage {text} NOT NULL, entered_at {big} NOT NULL,"
        f" left_at {big}, exit {text}, first_in_stage {small} NOT NULL,"
        f" first_advance {small} NOT NULL, PRIMARY KEY (deal_uuid, seq))",
        # The stays a day's partial sum counts: entered, and left, in a range of time.
        f"CREATE INDEX IF NOT EXISTS {STAYS_TABLE}_entered ON {STAYS_TABLE} (pipeline_id, entered_at)",
        f"CREATE INDEX IF NOT EXISTS {STAYS_TABLE}_left ON {STAYS_TABLE} (pipeline_id, left_at)",
        # The median of the days to close won: a bucket count finds the middle, this index the
        # exact values inside the bucket (covering: the OFFSET walk never touches the heap).
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_won_dur_cover"
        f" ON {CURRENT_TABLE} (pipeline_id, (closed_at - opened_at))"
        f"{include('closed_at, opened_at')} WHERE status = 'won'",
        # Open deals failing qualification (few): counted without reading the pipeline's deals
        # (a scan of every open deal cost 114 ms of the metrics at a million deals).
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_unqualified"
        f" ON {CURRENT_TABLE} (pipeline_id, amount_units) WHERE status = 'open' AND unqualified = 1",
        # Closed windows: the deals closed in a range of time.
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_closed ON {CURRENT_TABLE}"
        f" (pipeline_id, closed_at){include('status, amount_units, opened_at')}"
        " WHERE closed_at IS NOT NULL",
        f"CREATE TABLE IF NOT EXISTS {PIPELINES_TABLE} (pipeline_id {text} PRIMARY KEY,"
        f" last_event_at {big} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {STATS_TABLE} (pipeline_id {text} NOT NULL,"
        f" stage {text} NOT NULL, {counters}, PRIMARY KEY (pipeline_id, stage))",
        f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (pipeline_id {text} NOT NULL, dim {text} NOT NULL,"
        f" key_null {small} NOT NULL, key {text} NOT NULL, {key_counters},"
        f" PRIMARY KEY (pipeline_id, dim, key_null, key))",
        f"CREATE TABLE IF NOT EXISTS {VISITS_TABLE} (pipeline_id {text} NOT NULL,"
        f" visited {text} NOT NULL, ever_won {small} NOT NULL, n {big} NOT NULL,"
        f" PRIMARY KEY (pipeline_id, visited, ever_won))",
        f"CREATE TABLE IF NOT EXISTS {WON_TABLE} (pipeline_id {text} NOT NULL,"
        f" bucket {big} NOT NULL, n {big} NOT NULL, PRIMARY KEY (pipeline_id, bucket))",
        f"CREATE TABLE IF NOT EXISTS {CLOSED_TABLE} (pipeline_id {text} NOT NULL,"
        f" day {big} NOT NULL, status {text} NOT NULL, dur_bucket {big} NOT NULL,"
        f" n {big} NOT NULL, units {big} NOT NULL, dur_ms {big} NOT NULL,"
        f" PRIMARY KEY (pipeline_id, day, status, dur_bucket))",
        f"CREATE TABLE IF NOT EXISTS {T_STATS_TABLE} (pipeline_id {text} NOT NULL,"
        f" lvl {small} NOT NULL, bucket {big} NOT NULL, stage {text} NOT NULL, {counters},"
        f" PRIMARY KEY (pipeline_id, lvl, bucket, stage))",
        f"CREATE TABLE IF NOT EXISTS {T_KEYS_TABLE} (pipeline_id {text} NOT NULL,"
        f" dim {text} NOT NULL, lvl {small} NOT NULL, bucket {big} NOT NULL,"
        f" key_null {small} NOT NULL, key {text} NOT NULL, {key_counters},"
        f" PRIMARY KEY (pipeline_id, dim, lvl, bucket, key_null, key))",
        f"CREATE TABLE IF NOT EXISTS {T_VISITS_TABLE} (pipeline_id {text} NOT NULL,"
        f" lvl {small} NOT NULL, bucket {big} NOT NULL, visited {text} NOT NULL,"
        f" ever_won {small} NOT NULL, n {big} NOT NULL,"
        f" PRIMARY KEY (pipeline_id, lvl, bucket, visited, ever_won))",
        f"CREATE TABLE IF NOT EXISTS {T_WON_TABLE} (pipeline_id {text} NOT NULL,"
        f" lvl {small} NOT NULL, bucket {big} NOT NULL, dur_bucket {big} NOT NULL,"
        f" n {big} NOT NULL, PRIMARY KEY (pipeline_id, lvl, bucket, dur_bucket))",
        f"CREATE TABLE IF NOT EXISTS {OPEN_ENTERED_TABLE} (pipeline_id {text} NOT NULL,"
        f" lvl {small} NOT NULL, bucket {big} NOT NULL, stage {text} NOT NULL,"
        f" n {big} NOT NULL, PRIMARY KEY (pipeline_id, lvl, bucket, stage))",
        f"CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (pipeline_id {text} NOT NULL,"
        f" version {int_} NOT NULL, first_at {big} NOT NULL, PRIMARY KEY (pipeline_id, version))",
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (version {int_} NOT NULL)",
    ]


def secondary_indexes(ddl: list[str]) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the indexes a bulk rebuild drops first and builds at the end
    (one sorted build is much cheaper than maintaining them row by row)."""
    prefix = "CREATE INDEX IF NOT EXISTS "
    return [(s[len(prefix) :].split()[0], s) for s in ddl if s.startswith(prefix)]


POSTGRES_DDL = _ddl("uuid", "text", "integer", "bigint", "smallint", True)
SQLITE_DDL = _ddl("TEXT", "TEXT", "INTEGER", "INTEGER", "INTEGER", False)
# Indexes an earlier schema built that a newer index replaces: dropped when the views start.
# Indexes change without a SCHEMA_VERSION bump (that would rebuild every table from the log,
# minutes at a million deals): the new ones are built by CREATE INDEX IF NOT EXISTS.
RETIRED_INDEXES = (
    f"{CURRENT_TABLE}_won_dur",
    f"{HISTORY_TABLE}_won_dur",
    f"{HISTORY_TABLE}_board",
    f"{HISTORY_TABLE}_board_cover",
    f"{HISTORY_TABLE}_open_recent",
)
