"""Without QEMU the conformance tests are skipped, with one line saying how to
run them; where QEMU must be there (``IOVIRT_CONFORMANCE=required``, as CI
sets it), its absence is an error instead."""

import os
import shutil

import pytest

from .qtest import QEMU

MISSING = None if shutil.which(QEMU) else (
    f"conformance tests skipped: {QEMU} not found; install QEMU (apt-get install qemu-system-x86) to run them")


def pytest_collection_modifyitems(config, items):
    if MISSING is None:
        return
    if os.environ.get("IOVIRT_CONFORMANCE") == "required":
        raise pytest.UsageError(MISSING.replace("skipped", "required"))
    skip = pytest.mark.skip(reason=MISSING)
    for item in items:
        if "conformance" in item.nodeid.split("/"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if MISSING is not None and os.environ.get("IOVIRT_CONFORMANCE") != "required":
        terminalreporter.write_line(MISSING)
