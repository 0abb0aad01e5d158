"""set_os_thread_name: the OS name of a task thread, read back from /proc (Linux only)."""

from __future__ import annotations

import sys
import threading

import pytest

from emrflow.runtime.process import set_os_thread_name

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_NAME) is Linux's")


def _name_in_thread(name: str) -> tuple[bool, str, str]:
    out: list = []

    def body() -> None:
        ok = set_os_thread_name(name)
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="utf-8") as f:
            out.append((ok, f.read().rstrip("\n")))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="utf-8") as f:
        caller = f.read().rstrip("\n")
    return out[0][0], out[0][1], caller


def test_short_name_is_set_on_the_calling_thread_only():
    ok, name, caller = _name_in_thread("Source 1/2")
    assert ok
    assert name == "Source 1/2"
    assert caller != "Source 1/2"


def test_long_name_keeps_its_first_15_bytes():
    ok, name, _ = _name_in_thread("latest per (movie, user) 2/2")
    assert ok
    assert name == "latest per (mov"


def test_cut_on_a_character_boundary():
    # 14 ASCII bytes then a 2-byte character: byte 15 would split it, so it is dropped
    ok, name, _ = _name_in_thread("abcdefghijklmné")
    assert ok
    assert name == "abcdefghijklmn"
