"""`dealflow import crm DIR`: a CRM export (the "CRM Sales Opportunities" shape) as deal events.

The export (``sales_pipeline.csv``, ``accounts.csv``, ``products.csv``, ``sales_teams.csv``) only
knows four stages -- Prospecting > Engaging > Won / Lost -- and two dates per opportunity
(``engage_date``, ``close_date``). Everything goes through the same batch path as the HTTP API
(:meth:`engine.application.DealflowApp.ingest`, commands validated by
:data:`engine.commands.incoming_event`, actor ``import:crm``), so the importer cannot record
anything the API would refuse. Choices, one by one:

Deals
    * ``deal_id`` is the CRM's ``opportunity_id``; every event id is
      ``crm:{opportunity_id}:{step}`` and every body is a pure function of the CSV rows, so a
      second import of the same export records nothing (every event is a ``duplicate``).
    * ``owner`` is the sales agent, ``account`` the account (none when the row has none),
      ``industry`` the account's sector (normalised, see quirks), ``amount`` the product's list
      price (``products.csv`` ``sales_price``). ``lead_source`` and ``decision_maker_role`` are not
      in the export and stay empty: nothing is invented. ``attributes`` keep the CRM's own facts:
      ``crm_opportunity_id``, ``crm_stage``, ``product`` (as written in the export),
      ``product_series``, ``list_price``, ``close_value`` (closed deals) and ``regional_office``.
    * The name is ``"{product} for {account}"`` (``"{product} ({opportunity_id})"`` without an
      account).

Business time (the engine refuses a deal's time running backwards, so each deal's events are
built in time order and sent in that order; dates are bare, i.e. midnight UTC)
    * Prospecting: opened in the pipeline's first stage. The export gives these rows no date at
      all, so they are opened at the *export date*: the latest date found anywhere in
      ``sales_pipeline.csv`` (2017-12-31 for the bundled sample), i.e. "they were in the pipeline
      when the export was taken". It is deterministic (a re-import is still all duplicates),
      never earlier than any dated deal, and says nothing false about age before the export.
      ``--export-date`` overrides it.
    * Engaging, Won and Lost deals were engaged, so they are opened at ``engage_date`` (the CRM
      has no earlier creation date; the prospecting stay is therefore 0 days, which is what the
      data supports). At the same instant the first stage's exit criteria are recorded -- for
      the default pipeline the fact ``contact_made`` (engaging *is* making contact) -- and the
      deal moves to the second stage (``qualification``).
    * Lost deals: ``lost`` at ``close_date`` from the second stage, reason ``"Lost in CRM (no
      reason recorded in the export)"``. The export's ``close_value`` of 0 is kept as the
      attribute ``close_value``; the deal's ``amount`` stays the list price, i.e. the value that
      was lost (a 0 amount would hide what was at stake).
    * Won deals: ``won`` at ``close_date`` with ``amount`` = ``close_value``. Winning requires the
      exit criteria of the current stage and of every later stage. The export does not say when
      those were met, only that the deal was won, so each one is recorded at ``close_date``,
      just before the win, with a note/summary saying it is implied by the CRM's Won outcome:
      for the default pipeline the facts ``need``, ``budget``, ``authority``, ``timeline``
      (qualification), the activity ``demo`` (meeting), the activity ``proposal`` (proposal; the
      ``priced`` criterion holds through the list price), and the facts ``verbal_commit``
      (negotiation) and ``contract_signed`` (contract). The deal is *not* walked through meeting,
      proposal, negotiation and contract: the export never says it was there, and inventing
      zero-day stays would distort the funnel and time-in-stage figures. Criteria are read from
      the pipeline definition, so ``--pipeline`` works for other pipelines whose criteria are
      facts, activities and ``amount``.
    * Winning opens the pipeline's ``after_won`` follow-up deal (``post-purchase``) as the engine
      always does, at the close date.

Data quirks (each one handled on purpose and counted in the returned/printed report)
    * Product names that do not match ``products.csv`` (``GTXPro`` vs ``GTX Pro``) are matched
      ignoring case, spaces and punctuation; a product still unknown gets no price (a won deal
      then uses its close value as amount so the win can be recorded).
    * Misspelt sectors (``technolgy``) are corrected through a small explicit table; every
      sector is lower-cased and trimmed.
    * Deals without an account (1,088 Engaging, 337 Prospecting in the sample) are imported with
      no account and no industry (they show as ``key: null`` in breakdowns). Accounts missing
      from ``accounts.csv`` likewise get no industry and are reported.
    * Undated Prospecting deals: see the export date above.
    * Lost deals with ``close_value`` 0: see above.
    * Rows that cannot be imported faithfully (unknown stage, a closed deal without a date,
      unparseable dates, a close before the engage date) are imported as far as the data goes
      and listed under ``anomalies``; an event the engine refuses is counted under ``rejected``
      with its reason. No row is ever dropped silently.

The sales team directory (agents with their managers, managers with none) is merged into the
team directory (``put_directory``) so escalations reach the right manager. The export has no
e-mail addresses; each person gets a synthetic ``first.last@example.com`` (a reserved domain).
"""

from engine.importers.crm.export import ACTOR, Export
from engine.importers.crm.plan import Plan, plan
from engine.importers.crm.run import import_crm, print_report

__all__ = ["ACTOR", "Export", "Plan", "import_crm", "plan", "print_report"]
