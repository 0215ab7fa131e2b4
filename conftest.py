"""(At the repository root, not in notebooks/, where every .py is a jupytext notebook.) nbval's runs of the notebooks at their defaults (`make test`) work offline: a notebook kernel starts with
``$POLAR_HUB_DATA`` naming a hub-format copy of the hub datasets (tests/hub_fixtures.py, written once per
session into a temporary folder) and the hub switched off (``HF_DATASETS_OFFLINE``, ``HF_HUB_OFFLINE``), so
notebook 05's GLUE splits are read from that copy. nbval starts a notebook's kernel while setting up its
first cell, and the kernel inherits ``os.environ`` as it is then (jupyter_client copies it); the variables are
set around that setup only and restored after it, so no other test sees them."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HUB = {}  # the session's hub copy, written on first use
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _hub_copy() -> Path:
    if "root" not in _HUB:
        from tests.hub_fixtures import write_hub_copy

        _HUB["tmp"] = tempfile.mkdtemp(prefix="polar-nbval-hub-")
        _HUB["root"] = write_hub_copy(Path(_HUB["tmp"]))
    return _HUB["root"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    if not type(item).__module__.startswith("nbval"):  # a notebook's cell: nbval's items only
        yield
        return
    values = {"POLAR_HUB_DATA": str(_hub_copy()), **OFFLINE}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield  # the first cell's setup starts the notebook's kernel with these variables
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pytest_unconfigure(config):
    if "tmp" in _HUB:
        shutil.rmtree(_HUB["tmp"], ignore_errors=True)
