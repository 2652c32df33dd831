"""A pytest plugin: the tests a lane's `-m` leaves out are counted in the summary line under pytest-xdist too.

pytest prints "N deselected" when it collects in its own process; under pytest-xdist the workers collect and
deselect, and the controller's summary line drops the count, so the quick lane would leave the slow tests out
silently. Each worker sends the ids it deselected back with its report (xdist's `workeroutput`); the controller
counts them once (every worker collects the whole suite) in the summary line."""
from __future__ import annotations

import pytest

_deselected: list[str] = []


def pytest_deselected(items):
    _deselected.extend(item.nodeid for item in items)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker
        session.config.workeroutput["deselected"] = list(_deselected)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """On the xdist controller, as each worker finishes: its deselected ids, counted once across workers."""
    ids = getattr(node, "workeroutput", {}).get("deselected", [])
    reporter = node.config.pluginmanager.get_plugin("terminalreporter")
    if ids and reporter is not None and not reporter.stats.get("deselected"):
        reporter.stats["deselected"] = list(ids)
