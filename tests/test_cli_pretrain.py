"""psyau pretrain on a tiny cache, then psyau federate --au-module FILE --freeze-au (in-process)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psyau_graph.cli import main

from _fakes_train import one_thread  # noqa: F401

import psyau_graph.cli.pretrain  # noqa: E402,F401  (a broken module fails here, never skips)
import psyau_graph.train.pretrain  # noqa: E402,F401

EMOTIONS = ("positive", "negative", "surprise")
SUBJECTS = ("s01", "s02", "s03", "s04")


def _cache(root, clips_per_subject=3, unknown_every=3, coding="none"):
    """Random-feature clips; every ``unknown_every``-th clip has no AU coding (all labels unknown)."""
    g = torch.Generator().manual_seed(0)
    k = 0
    for si, s in enumerate(SUBJECTS):
        d = root / "clips" / "synth" / s
        d.mkdir(parents=True, exist_ok=True)
        for c in range(clips_per_subject):
            y = (si + c) % 3
            meta = {"dataset": "synth", "subject": s, "clip": f"c{c}", "onset": 0, "apex": 1, "offset": 2,
                    "aus": [1, 2] if y == 2 else [12], "emotion": EMOTIONS[y], "flow_method": "dis"}
            if unknown_every and k % unknown_every == 0:
                meta["aus_coding"] = coding
            k += 1
            torch.save({"rois": torch.randn(65, 3, 5, 5, generator=g) * 0.5 + y,
                        "flow28": torch.randn(3, 28, 28, generator=g) * 0.5 + y,
                        "keypoints": torch.rand(65, 2, generator=g) * 128,
                        "flow": torch.zeros(3, 8, 8, dtype=torch.float16), "meta": meta}, d / f"c{c}.pt")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_pretrain")
    cache = _cache(tmp / "cache")
    out = tmp / "au" / "au.pt"
    return cache, out


def _pretrain(cache, out, *extra):
    return main(["pretrain", "--data", str(cache), "--out", str(out), "--epochs", "2", "--lr", "1e-3",
                 "--batch-size", "4", *extra])


def test_pretrain_writes_a_file_federate_loads_unchanged(pretrained, tmp_path, capsys, monkeypatch):
    from psyau_graph.train import pretrain as pt
    from psyau_graph.train.checkpoint import safe_torch_load

    cache, out = pretrained
    assert _pretrain(cache, out) == 0
    cap = capsys.readouterr()
    assert "psyau progress | pretrain AU: 1/2 epochs" in cap.err  # one line per epoch off a terminal
    assert "psyau progress | pretrain AU: 2/2 epochs" in cap.err
    assert "AU F1 on" in cap.out and "sigmoid >= 0.5" in cap.out and f"AU module: {out}" in cap.out
    assert out.is_file() and not list(out.parent.glob("*.tmp"))
    saved = safe_torch_load(out, "AU module file")
    meta = saved["meta"]
    assert meta["epochs"] == 2 and len(meta["loss_history"]) == 2 and meta["au_pos_weight"] == "train"
    assert meta["au_labels_known"] == 8 * 12  # 12 clips, every third without AU coding
    assert len(meta["pos_weight"]) == 12 and all(w >= 1 for w in meta["pos_weight"])

    loaded = []
    real_load = pt.load_au_module

    def spy(model, path, freeze=False):
        real_load(model, path, freeze=freeze)
        loaded.append((model, {k: v.clone() for k, v in model.au_module().state_dict().items()}, freeze))
        return model

    monkeypatch.setattr(pt, "load_au_module", spy)
    rc = main(["federate", "--task", "fedpsyau", "--data", str(cache), "--au-module", str(out), "--freeze-au",
               "--strategy", "fedavg", "--clients", "2", "--rounds", "1", "--local-epochs", "1",
               "--repeats", "1", "--batch-size", "4", "--lr", "1e-3", "--out", str(tmp_path / "fed")])
    assert rc == 0, capsys.readouterr().err
    assert loaded and all(freeze for _, _, freeze in loaded)
    ref = saved["state_dict"]
    for model, at_load, _ in loaded:
        assert set(at_load) == set(ref)
        assert all(torch.equal(at_load[k], ref[k]) for k in ref)  # loaded weights == saved ones
        now = model.au_module().state_dict()
        assert all(torch.equal(now[k], ref[k]) for k in ref)  # and frozen: unchanged by training


def test_reported_au_f1_is_that_of_the_saved_module_on_known_labels(pretrained):
    """Recompute the GAT head's AU F1 from the saved file by hand: known labels, sigmoid >= 0.5."""
    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.nn import FedPsyAU, FedPsyAUConfig
    from psyau_graph.train.checkpoint import safe_torch_load
    from psyau_graph.train.pretrain import load_au_module

    cache, out = pretrained
    if not out.is_file():
        assert _pretrain(cache, out) == 0
    meta = safe_torch_load(out, "AU module file")["meta"]
    ds = MEDataset(cache, progress=False)
    model = load_au_module(FedPsyAU(FedPsyAUConfig(num_classes=ds.num_classes)), out).eval()
    rois = torch.stack([d.x for d in ds])
    with torch.no_grad():
        _, _, au_gat, _ = model.au_module()(rois)
    pred = torch.sigmoid(au_gat).numpy() >= 0.5
    au, known = (t.numpy() >= 0.5 for t in ds.au_labels)
    per = []
    for k in range(12):
        m = known[:, k]
        tp = int((pred[m, k] & au[m, k]).sum())
        fp = int((pred[m, k] & ~au[m, k]).sum())
        fn = int((~pred[m, k] & au[m, k]).sum())
        if 2 * tp + fp + fn:
            per.append(2 * tp / (2 * tp + fp + fn))
    assert meta["au_f1_gat"] == pytest.approx(float(np.mean(per)), abs=1e-12)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("psyau pretrain: "), err
    for w in words:
        assert w in err, err


def test_bad_inputs_exit_2_with_one_line(tmp_path, pretrained, capsys):
    cache, _ = pretrained
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a.pt")]) == 2
    _one_line_error(capsys, "--data", "missing")
    assert _pretrain(cache, tmp_path / "b.pt", "--epochs", "0") == 2
    _one_line_error(capsys, "--epochs must be >= 1")
    assert main(["pretrain", "--data", str(cache), "--out", str(tmp_path / "c.pt"), "--batch-size", "1"]) == 2
    _one_line_error(capsys, "--batch-size")
    assert _pretrain(cache, tmp_path / "d.pt", "--ablation", "I") == 2  # flow-only: no AU module
    _one_line_error(capsys, "no AU module")
    assert _pretrain(cache, tmp_path, "--epochs", "1") == 2  # --out is a folder
    _one_line_error(capsys, "--out", "folder")
    none_known = _cache(tmp_path / "uncoded", unknown_every=1)
    assert _pretrain(none_known, tmp_path / "e.pt") == 2
    _one_line_error(capsys, "no clip has known AU labels")
    if not torch.cuda.is_available():
        assert _pretrain(cache, tmp_path / "f.pt", "--device", "cuda") == 2
        _one_line_error(capsys, "CUDA is not available")
    assert _pretrain(cache, tmp_path / "g.pt", "--precision", "fp16") == 2
    _one_line_error(capsys, "CUDA")
    assert not any(tmp_path.glob("*.pt"))


def test_help_lists_pretrain(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "pretrain" in capsys.readouterr().out
