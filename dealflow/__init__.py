"""dealflow's composition root: the one package that imports every area.

``engine`` (domain, application, HTTP pieces), ``projections`` (read models) and ``workflows``
(Temporal automation) each import only downward; this package wires them into processes:
:mod:`dealflow.runtime` builds the services, :mod:`dealflow.http` assembles the HTTP app from
each area's routers, :mod:`dealflow.cli` is the ``dealflow`` command, and
:mod:`dealflow.processes` holds the long-running entry points. Nothing imports this package.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dealflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
