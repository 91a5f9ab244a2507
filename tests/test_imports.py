"""The layering promise: pure math and the loader do not pull in Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lit_opt


@pytest.mark.parametrize("module", ["lit_opt.functional", "lit_opt"])
def test_a_fresh_import_does_not_import_lightning(module):
    code = f"import sys, {module}; print('lightning' in sys.modules, 'lightning.pytorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_public_name_resolves():
    for name in lit_opt.__all__:
        assert getattr(lit_opt, name) is not None
    assert callable(lit_opt.export) and callable(lit_opt.restore)  # functions, not the subpackages
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lit_opt.nope  # noqa: B018
