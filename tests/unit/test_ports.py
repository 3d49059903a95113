"""Port claims: two processes that pick ports at once never get the same one (free of real servers)."""

import multiprocessing
import os
import subprocess
import sys

import pytest

from infra import stack
from infra.stack import GRPC_OFFSET


@pytest.fixture
def claims(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "PORT_CLAIMS", tmp_path)
    return tmp_path


def _pick(claims_dir, n, out, done):
    stack.PORT_CLAIMS = claims_dir
    out.put(list(stack.free_ports([f"p{i}" for i in range(n)]).values()))
    done.wait(60)  # a claim holds while its process lives: stay until every process has picked


def test_ports_of_two_processes_and_their_grpc_neighbours_never_overlap(claims):
    ctx = multiprocessing.get_context("fork")
    out, done = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_pick, args=(claims, 40, out, done)) for _ in range(2)]
    for w in workers:
        w.start()
    picked = [out.get(timeout=60) for _ in workers]
    done.set()
    for w in workers:
        w.join()
    slots = [{p + d for p in ports for d in (0, GRPC_OFFSET)} for ports in picked]
    assert all(len(s) == 80 for s in slots)  # within a process too: no port is another's gRPC neighbour
    assert not slots[0] & slots[1]


def test_a_claim_of_a_process_that_is_gone_is_void(claims):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (claims / "12345").write_text(gone.stdout.strip())
    assert stack.claim_port(12345)
    assert (claims / "12345").read_text() == str(os.getpid())


def test_a_claim_of_a_live_process_holds_and_this_process_does_not_claim_twice(claims):
    (claims / "12345").write_text(str(os.getppid()))
    assert not stack.claim_port(12345)
    assert stack.claim_port(12346)
    assert not stack.claim_port(12346)
