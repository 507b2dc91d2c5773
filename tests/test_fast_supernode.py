"""Polling knobs of the deployment engine without starting one: the checked SuperNode
launcher (``fast_supernode``) and the ServerApp's ``PollingGrid``."""
from __future__ import annotations

import importlib
import sys
import textwrap
from types import SimpleNamespace

import pytest

from psyau_graph.federated.flower import fast_supernode as fs
from psyau_graph.federated.flower.polling_grid import PollingGrid

FLOWER_LIKE = """
import time

def start_client_internal():
    while True:
        time.sleep({idle})

def _push_messages():
    while True:
        time.sleep(0.5)

    def yield_object_contents():
        time.sleep(0.5)
"""


def _module(tmp_path, monkeypatch, name, text):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_installed_flower_is_checked_or_refused():
    import flwr

    mod = importlib.import_module(fs.TARGET_MODULE)
    if flwr.__version__ in fs.CHECKED_FLWR_VERSIONS:
        fs.check_patchable(mod, flwr.__version__)  # the installed code is what it patches
        rep = fs.patch_report(0.2)
        assert rep["poll_interval_s"] == 0.2 and len(rep["sleeps_capped"]) == 3
    else:
        with pytest.raises(fs.FastSupernodeError, match="checked only for flwr"):
            fs.check_patchable(mod, flwr.__version__)


def test_code_that_differs_is_refused(tmp_path, monkeypatch):
    same = _module(tmp_path, monkeypatch, "flower_like_same", FLOWER_LIKE.format(idle=3))
    fs.check_patchable(same, fs.CHECKED_FLWR_VERSIONS[0])
    other = _module(tmp_path, monkeypatch, "flower_like_other", FLOWER_LIKE.format(idle=2))
    with pytest.raises(fs.FastSupernodeError, match="does not match"):
        fs.check_patchable(other, fs.CHECKED_FLWR_VERSIONS[0])
    extra = _module(tmp_path, monkeypatch, "flower_like_extra",
                    FLOWER_LIKE.format(idle=3) + "\nSTART = time.monotonic()\n")
    with pytest.raises(fs.FastSupernodeError, match="does not match"):
        fs.check_patchable(extra, fs.CHECKED_FLWR_VERSIONS[0])
    with pytest.raises(fs.FastSupernodeError, match="checked only for flwr 1.42.0"):
        fs.check_patchable(same, "9.9.9")


def test_patch_caps_only_that_module_sleeps(monkeypatch):
    import time

    mod = importlib.import_module(fs.TARGET_MODULE)
    monkeypatch.setattr(mod, "time", mod.time)  # restored after the test
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    if __import__("flwr").__version__ not in fs.CHECKED_FLWR_VERSIONS:
        pytest.skip("installed Flower is refused (tested above)")
    fs.patch(0.05)
    mod.time.sleep(3)
    mod.time.sleep(0.5)
    mod.time.sleep(0.01)
    assert slept == [0.05, 0.05, 0.01]
    assert mod.time.monotonic is time.monotonic  # everything else is the real module
    time.sleep(3)  # the time module itself is not changed
    assert slept[-1] == 3


def test_launcher_rejects_bad_interval(capsys):
    with pytest.raises(SystemExit) as exc:
        fs.main(["--poll-interval", "5", "--", "--insecure"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: poll interval must be between 0.01 and 3 seconds, got 5.0"]


class FakeGrid:
    """push_messages returns ids; the reply to message k arrives at pull number k + 1."""

    def __init__(self):
        self.pulls = 0

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        k = self.pulls - 1
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{k}"))] \
            if f"m{k}" in ids else []

    def get_node_ids(self):
        return [7, 8]


def test_polling_grid_pulls_at_its_interval(monkeypatch):
    from psyau_graph.federated.flower import polling_grid

    slept = []
    monkeypatch.setattr(polling_grid.time, "sleep", slept.append)
    inner = FakeGrid()
    grid = PollingGrid(inner, 0.1)
    got = grid.send_and_receive(["a", "b", "c"], timeout=None)
    assert [m.metadata.reply_to_message_id for m in got] == ["m0", "m1", "m2"]
    assert inner.pulls == 3 and slept == [0.1, 0.1]
    assert list(grid.get_node_ids()) == [7, 8]  # delegated


def test_polling_grid_stops_at_timeout_and_checks_interval(monkeypatch):
    from psyau_graph.federated.flower import polling_grid

    class Never(FakeGrid):
        def pull_messages(self, ids):
            self.pulls += 1
            return []

    clock = [0.0]
    monkeypatch.setattr(polling_grid.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(polling_grid.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    inner = Never()
    assert PollingGrid(inner, 0.3).send_and_receive(["a"], timeout=1.0) == []
    assert inner.pulls == 4  # at t = 0, 0.3, 0.6, 0.9; the last sleep ends at the timeout
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grid poll interval"):
            PollingGrid(inner, bad)


def test_grid_poll_interval_travels_in_the_run_config():
    from psyau_graph.federated.config import FederatedConfig
    from psyau_graph.federated.flower.common import from_run_config, to_run_config

    rc = to_run_config(FederatedConfig(), {"name": "toy"}, grid_poll_interval=0.1)
    assert from_run_config(rc)[2]["grid_poll_interval"] == 0.1
    assert from_run_config(to_run_config(FederatedConfig(), {"name": "toy"}))[2][
        "grid_poll_interval"] == 0.0


def test_packing_round_trips_exactly_and_checks_the_layout():
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    from psyau_graph.federated.flower.packing import (pack, pack_content, unpack,
                                                      unpack_content)

    g = torch.Generator().manual_seed(0)
    state = {"a.weight": torch.randn(4, 3, generator=g), "a.bias": torch.randn(4, generator=g),
             "bn.num_batches_tracked": torch.tensor(7), "b.weight": torch.randn(2, 2, 2, generator=g),
             "c.idx": torch.arange(5)}
    packed, layout = pack(state)
    assert sorted(packed) == ["packed.float32", "packed.int64"]
    assert packed["packed.float32"].numel() == 12 + 4 + 8
    back = unpack(packed, layout)
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k])
    short = {"packed.float32": packed["packed.float32"][:-1], "packed.int64": packed["packed.int64"]}
    with pytest.raises(ValueError, match="too short"):
        unpack(short, layout)
    with pytest.raises(ValueError, match="holds 25 values"):
        unpack({**packed, "packed.float32": torch.zeros(25)}, layout)

    content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 1})})
    assert pack_content(content) and len(content["arrays"]) == 2 and "pack-layout" in content
    assert not pack_content(content)  # already packed
    assert unpack_content(content) and "pack-layout" not in content
    assert not unpack_content(content)
    got = content["arrays"].to_torch_state_dict()
    assert list(got) == list(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_polling_grid_packs_pushes_and_unpacks_replies():
    import torch
    from flwr.app import ArrayRecord, RecordDict

    from psyau_graph.federated.flower.packing import pack_content

    state = {"w": torch.ones(2, 2), "b": torch.zeros(3)}
    pushed = []

    class Echo(FakeGrid):
        def push_messages(self, messages):
            pushed.extend(messages)
            return ["m0"]

        def pull_messages(self, ids):
            reply = RecordDict({"arrays": ArrayRecord(state)})
            pack_content(reply)  # as the ClientApp replies to a packed message
            return [SimpleNamespace(content=reply, has_error=lambda: False,
                                    metadata=SimpleNamespace(reply_to_message_id="m0"))]

    msg = SimpleNamespace(content=RecordDict({"arrays": ArrayRecord(state)}))
    got = PollingGrid(Echo(), 0.1, pack_arrays=True).send_and_receive([msg], timeout=None)
    assert list(pushed[0].content["arrays"]) == ["packed.float32"]  # one array crossed
    arrays = got[0].content["arrays"].to_torch_state_dict()
    assert "pack-layout" not in got[0].content and list(arrays) == ["w", "b"]
    assert torch.equal(arrays["w"], state["w"]) and torch.equal(arrays["b"], state["b"])


def test_federate_rejects_a_bad_poll_interval_in_one_line(tmp_path, capsys):
    from psyau_graph.cli import main
    from psyau_graph.federated.task import make_toy_data

    toy = make_toy_data(tmp_path / "toy.pt", subjects=4, per_subject=10, seed=0)
    rc = main(["federate", "--task", "toy", "--data", str(toy), "--clients", "2", "--rounds", "1",
               "--strategy", "fedavg", "--engine", "deployment", "--node-data", str(tmp_path), str(tmp_path),
               "--warm-clientapps", "--tls", "--poll-interval", "7", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["psyau federate: error: --poll-interval must be 0 or between 0.01 and 3 "
                   "seconds, got 7.0"]


def test_rejoin_launcher_retries_only_a_refused_sign_in():
    """A restarted SuperNode refused with 412 FLEET_NODE_ACTIVATION_FAILED (its node id is
    still online on the SuperLink) signs in again every ``retry_every`` s, at most
    ``retry_for`` s; any other error is raised at once, as Flower's own."""
    import json

    import flwr
    import httpx
    from flwr.supercore.error import ApiErrorCode, FlowerError

    from psyau_graph.federated.flower import rejoin_supernode as rj

    def refusal(code):
        req = httpx.Request("POST", "https://127.0.0.1/v1/fleet/activate-node")
        body = json.dumps(FlowerError(int(code), "internal").to_json("Failed to activate SuperNode."))
        resp = httpx.Response(412, request=req, text=body)
        return httpx.HTTPStatusError("412", request=req, response=resp)

    clock, said = [0.0], []

    def sleep(s):
        clock[0] += s

    def flaky(refusals, code=ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED):
        calls = []

        def activate(self, request):
            calls.append(clock[0])
            if len(calls) <= refusals:
                raise refusal(code)
            return "activated"
        return activate, calls

    act, calls = flaky(5)
    wrapped = rj.retrying_activate(act, 10.0, 0.5, clock=lambda: clock[0], sleep=sleep,
                                   say=said.append)
    assert wrapped(None, "req") == "activated" and calls == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert "still counts this node online" in said[0] and "after 5 refused tries in 2.5 s" in said[1]
    # refused for longer than retry_for: the last refusal is raised
    clock[0] = 0.0
    act, calls = flaky(1000)
    with pytest.raises(httpx.HTTPStatusError):
        rj.retrying_activate(act, 3.0, 0.5, clock=lambda: clock[0], sleep=sleep)(None, "req")
    assert len(calls) == 7 and clock[0] <= 3.0
    # another refusal (e.g. an invalid heartbeat interval) is not retried
    act, calls = flaky(1, ApiErrorCode.FLEET_INVALID_HEARTBEAT_INTERVAL)
    with pytest.raises(httpx.HTTPStatusError):
        rj.retrying_activate(act, 10.0, 0.5, clock=lambda: clock[0], sleep=sleep)(None, "req")
    assert len(calls) == 1
    with pytest.raises(ValueError, match="--retry-every"):
        rj._check_args(10, 0)
    if flwr.__version__ in rj.CHECKED_FLWR_VERSIONS:
        rj.check_patchable(flwr.__version__)
    with pytest.raises(rj.RejoinSupernodeError, match="read only for flwr"):
        rj.check_patchable("0.0.1")
