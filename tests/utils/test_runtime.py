"""Runtime helpers: the glibc allocator setting that keeps feature maps' pages for reuse."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

_PROBE = "from selfpick.utils.runtime import tune_allocator as t; print(t(), t())"


def _probe(**env) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "SELFPICK_MALLOC"}
    clean.update(env)
    return subprocess.run([sys.executable, "-c", _PROBE], env=clean, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the setting exists only with glibc")
def test_allocator_is_tuned_on_glibc_and_the_call_is_idempotent():
    assert _probe() == ["True", "True"]


@pytest.mark.parametrize("env", [{"SELFPICK_MALLOC": "off"},
                                 {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_users_own_allocator_settings_win(env):
    assert _probe(**env) == ["False", "False"]
