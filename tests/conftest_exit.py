"""pytest plugin: leave the process with pytest's exit status, skipping interpreter finalisation.

The Temporal SDK (temporalio, a Rust core with its own native threads) can crash the Python
interpreter while it shuts down once a Worker has run: the process then dies with SIGSEGV
(exit 139) *after* pytest has already printed a perfectly good summary, so a green run looks red
(and, worse, a red run's status is lost). The crash happens in interpreter finalisation, so we
never let finalisation run:

* ``pytest_sessionfinish`` remembers the session; by then the terminal reporter has printed the
  final "N passed, M failed in Xs" line (it prints it in its own ``pytest_sessionfinish``
  wrapper, which completes before any ``pytest_unconfigure`` hook is called);
* the last ``pytest_unconfigure`` hook (``trylast``) reads the final ``session.exitstatus``,
  stops pytest's global capture (so nothing it still buffers is lost), flushes logging and the
  standard streams and calls ``os._exit(status)``.

Load it with ``-p tests.conftest_exit`` (``scripts/test`` does) or from ``tests/conftest.py``
with ``pytest_plugins = ["tests.conftest_exit"]``; loading it both ways registers it once.

Set ``DEALFLOW_PYTEST_HARD_EXIT=0`` to turn it off (e.g. to debug an atexit handler).
It does nothing in nested in-process pytest runs (``pytester.runpytest``) or in xdist workers:
only the outermost session of the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import pytest

_depth = 0  # how many pytest configs are configured in this process right now
_session: pytest.Session | None = None


def _enabled() -> bool:
    return os.environ.get("DEALFLOW_PYTEST_HARD_EXIT", "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    global _depth
    _depth += 1


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session
    if _depth == 1:
        _session = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    global _depth, _session
    _depth -= 1
    session, _session = _session, None
    if _depth != 0 or session is None or not _enabled():
        return
    if hasattr(config, "workerinput"):  # pytest-xdist worker: let execnet shut down normally
        return
    status = int(session.exitstatus)
    _hard_exit(config, status)


def _hard_exit(config: pytest.Config, status: int) -> None:
    # Never let this cleanup turn a result into a crash.
    with contextlib.suppress(Exception):
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.stop_global_capturing()
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(status)
