"""``psyau train --prior``: parsing, one-line errors, and that the chosen prior reaches
the model's prior buffers (and is recorded in the run's outputs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from psyau_graph.au import AUS
from psyau_graph.cli import build_parser, main

from _fakes_train import one_thread  # noqa: F401
from test_cli_train import _write_cache

import psyau_graph.cli._prior  # noqa: E402,F401  (a broken module fails here, never skips)


def _distinct_prior(path):
    """A 12 × 12 prior unlike any shipped one: every AU pairs with the next AU in ring order
    (value 3) and with itself (value 1)."""
    from psyau_graph.priors import save_prior_csv

    m = np.eye(12)
    for i in range(12):
        m[i, (i + 1) % 12] = 3.0
    return save_prior_csv(m, path, decimals=None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return _write_cache(tmp_path_factory.mktemp("prior_cache") / "cache")


def _argv(cache, out, *extra):
    return ["train", "--data", str(cache), "--classes", "synth", "--protocol", "kfold:2", "--epochs", "1",
            "--batch-size", "6", "--lr", "1e-3", "--out", str(out), "--threads", "1", *extra]


def test_prior_option_parses():
    p = build_parser(["train"])
    assert p.parse_args(["train", "--data", "d", "--out", "o"]).prior == "dfme"
    assert p.parse_args(["train", "--data", "d", "--out", "o", "--prior", "auto"]).prior == "auto"
    assert p.parse_args(["train", "--data", "d", "--out", "o", "--prior", "x.csv"]).prior == "x.csv"


@pytest.mark.parametrize("kind", ["missing", "malformed", "negative", "name"])
def test_bad_prior_is_one_line_exit_2(cache, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    bad = tmp_path / "prior.csv"
    if kind == "missing":
        arg = str(tmp_path / "nope.csv")
    elif kind == "malformed":
        bad.write_text("AU,AU1,AU2\nAU1,1,x\n")
        arg = str(bad)
    elif kind == "negative":
        _distinct_prior(bad)
        bad.write_text(bad.read_text().replace("AU1,1,3", "AU1,-1,3", 1))
        arg = str(bad)
    else:
        arg = "dfme2"
    assert main(_argv(cache, tmp_path / "run", "--prior", arg)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"psyau train: error: --prior {arg}") and "\n" not in err, err
    assert not (tmp_path / "run" / "results.json").exists()


def test_auto_prior_counts_the_clips_au_labels(cache, tmp_path):
    """Hand count: each of the cache's 4 subjects has clips EP01, EP03 with AUs {6, 12} and
    EP02 with {4, 9}: 8 clips with {6, 12}, 4 with {4, 9}."""
    from psyau_graph.cli._prior import resolve_prior
    from psyau_graph.data.dataset import MEDataset

    ds = MEDataset(cache, label_scheme="synth")
    source, rec = resolve_prior("auto", ds, tmp_path)
    c = np.asarray(rec["counts"])
    i4, i9, i6, i12 = (AUS.index(a) for a in (4, 9, 6, 12))
    assert rec["n_clips"] == 12 and c[i4, i9] == 4 and c[i6, i12] == 8 and c[i4, i4] == 4 and c[i12, i12] == 8 and c[i4, i6] == 0
    assert c.sum() == 12 * 4
    m = np.asarray(rec["matrix"])
    assert m[i4, i4] == m[i4, i9] == 0.5 and m[AUS.index(1)].sum() == 0
    assert source.endswith("prior.csv") and (tmp_path / "prior.csv").is_file()


def test_auto_prior_without_known_aus_is_an_error(tmp_path):
    import torch

    from psyau_graph.cli._prior import resolve_prior
    from psyau_graph.errors import PsyauError

    class NoCoding:
        def __len__(self):
            return 3

        @property
        def au_labels(self):
            return torch.zeros(3, 12), torch.zeros(3, 12)

    with pytest.raises(PsyauError, match="--prior auto: no clip"):
        resolve_prior("auto", NoCoding(), tmp_path)


def test_given_prior_reaches_the_model_buffers(cache, tmp_path):
    from psyau_graph.graphs import au_graph, edge_values_to_dense
    from psyau_graph.train.checkpoint import build_model

    path = _distinct_prior(tmp_path / "ring.csv")
    out = tmp_path / "run"
    assert main(_argv(cache, out, "--prior", str(path))) == 0
    res = json.loads((out / "results.json").read_text())
    rec = res["extra"]["prior"]
    assert rec["kind"] == "file" and rec["source"] == str(path) and rec["used_by_ablation"] is True
    assert (out / "prior.csv").is_file()
    model, _ = build_model(out / "model.pt")
    gat = model.au_net.gat
    for region, block in (("global", gat.whole), ("upper", gat.upper), ("lower", gat.lower)):
        g = au_graph(region, prior=str(path))
        want = edge_values_to_dense(g.edge_index, g.edge_prior, int(g.num_nodes))
        assert torch_allclose(block.prior, want), region
        g0 = au_graph(region, prior="dfme")
        dfme = edge_values_to_dense(g0.edge_index, g0.edge_prior, int(g0.num_nodes))
        assert not torch_allclose(block.prior, dfme), region


def test_model_with_a_csv_prior_rebuilds_without_the_file(cache, tmp_path):
    """model.pt carries the prior's values: once the CSV named in its config is gone, the
    rebuilt model has the same prior buffers and gives the same logits (its config still
    names the original file)."""
    import torch

    from psyau_graph.train.checkpoint import build_model

    path = _distinct_prior(tmp_path / "ring.csv")
    out = tmp_path / "run"
    assert main(_argv(cache, out, "--prior", str(path))) == 0
    before, _ = build_model(out / "model.pt")
    path.unlink()
    after, _ = build_model(out / "model.pt")
    assert after.config.prior == str(path)
    for name in ("whole", "upper", "lower"):
        assert torch.equal(getattr(after.au_net.gat, name).prior, getattr(before.au_net.gat, name).prior)
    sb, sa = before.state_dict(), after.state_dict()
    assert sb.keys() == sa.keys() and all(torch.equal(sb[k], sa[k]) for k in sb)


def torch_allclose(a, b):
    import torch

    return bool(torch.allclose(a.float(), torch.as_tensor(b).float(), atol=1e-5))


def test_federate_prior_errors(cache, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    base = ["federate", "--task", "fedpsyau", "--data", str(cache), "--strategy", "fedavg", "--out",
            str(tmp_path / "fed")]
    assert main(base + ["--prior", "auto"]) == 2
    assert capsys.readouterr().err.startswith("psyau federate: error: --prior auto: not available")
    assert main(base + ["--prior", str(tmp_path / "nope.csv")]) == 2
    assert f"error: --prior {tmp_path / 'nope.csv'}: no such file" in capsys.readouterr().err
    assert main(["federate", "--task", "toy", "--data", "x", "--out", str(tmp_path / "t"), "--prior", "samm"]) == 2
    assert "--prior needs --task fedpsyau" in capsys.readouterr().err


def test_federate_prior_reaches_every_model(cache, tmp_path, monkeypatch, capsys):
    from psyau_graph.graphs import au_graph, edge_values_to_dense
    from psyau_graph.nn.model import FedPsyAU

    built = []
    real_init = FedPsyAU.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        built.append(self)

    monkeypatch.setattr(FedPsyAU, "__init__", spy)
    path = _distinct_prior(tmp_path / "ring.csv")
    out = tmp_path / "fed"
    rc = main(["federate", "--task", "fedpsyau", "--data", str(cache), "--prior", str(path), "--strategy", "fedavg",
               "--clients", "2", "--rounds", "1", "--local-epochs", "1", "--repeats", "1", "--batch-size", "4",
               "--lr", "1e-3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert built
    g = au_graph("global", prior=str(path))
    want = edge_values_to_dense(g.edge_index, g.edge_prior, int(g.num_nodes))
    assert all(torch_allclose(m.au_net.gat.whole.prior, want) for m in built)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["prior"]["kind"] == "file" and doc["prior"]["source"] == str(path)
    assert (out / "prior.csv").is_file()
