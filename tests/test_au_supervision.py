"""AU supervision on data like the real releases: rare AUs and clips without AU coding.

From the sheet (``aus_coding``) through the cache and ``MEDataset.au_known`` to the masked
loss, the training fold's positive weights and the masked AU F1; and the end-to-end claim:
on a set where each AU is in ~5 % of the clips and a third of the clips have no AU coding,
the old handling (unknown = "no AU", plain BCE) gives an AU F1 of about 0 with hardly any
probability ≥ 0.5, while mask + positive weights gives a clearly positive AU F1.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from _fakes_train import FakeSet, one_thread  # noqa: F401
from psyau_graph.au import AUS, au_known_mask
from psyau_graph.data.annotations import read_annotations
from psyau_graph.data.dataset import MEDataset
from psyau_graph.data.synth import SynthConfig, plan_dataset, write_sheet
from psyau_graph.nn import FedPsyAUOutput, fedpsyau_loss
from psyau_graph.nn.model import au_pos_weight
from psyau_graph.preprocess.batch import _job, load_clip_cache
from psyau_graph.train.fit import (AU_THRESHOLD, TrainConfig, dataset_au_labels, evaluate, fit, make_loader,
                                   train_pos_weight)


# --------------------------------------------------------------------------- sheet → cache meta
def test_sheet_cells_give_the_coding(tmp_path):
    rows = ["Subject,Filename,Onset Frame,Apex Frame,Offset Frame,Action Units,Estimated Emotion",
            "1,EP01,1,5,9,4+10,disgust", "1,EP02,1,5,9,?,disgust", "2,EP03,1,5,9,R12+?,happiness",
            "2,EP04,1,5,9,,happiness", "3,EP05,1,5,9,AD38,others"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    df = read_annotations(tmp_path / "s.csv", "casme2")
    assert df["aus_coding"].tolist() == ["coded", "none", "partial", "none", "coded"]
    metas = [_job(r, "casme2", tmp_path)["meta"] for r in df.to_dict("records")]
    assert [(m["aus"], m["aus_coding"]) for m in metas] == [
        ([4, 10], "coded"), ([], "none"), ([12], "partial"), ([], "none"), ([], "coded")]


def test_smic_sheet_without_au_column_is_unknown(tmp_path):
    (tmp_path / "smic.csv").write_text("Subject,Filename,Onset Frame,Offset Frame,label\n1,s1_ne_01,1,9,0\n")
    df = read_annotations(tmp_path / "smic.csv", "smic")
    assert df["aus_coding"].tolist() == ["none"]
    assert _job(df.to_dict("records")[0], "smic", tmp_path)["meta"]["aus_coding"] == "none"


def test_rows_without_the_column():
    base = {"subject": "s", "clip": "c", "onset": 1, "apex": 2}

    def meta(**kw):
        return _job({**base, **kw}, "x", "/cache")["meta"]

    assert meta(aus=frozenset({1}))["aus_coding"] == "coded"  # a table from before the column: coded
    assert meta(aus=None)["aus_coding"] == "none" and meta(aus=float("nan"))["aus"] == []
    assert meta(aus=frozenset({12}), aus_uncoded=True)["aus_coding"] == "partial"
    assert meta(aus=frozenset(), aus_uncoded=True)["aus_coding"] == "none"
    with pytest.raises(ValueError, match="aus_coding of s/c: expected one of"):
        meta(aus=frozenset(), aus_coding="maybe")
    with pytest.raises(ValueError, match="'none' but AUs"):
        meta(aus=frozenset({4}), aus_coding="none")


def test_known_mask_of_each_coding():
    assert au_known_mask([4], "coded").tolist() == [1.0] * 12
    assert au_known_mask([4], "none").tolist() == [0.0] * 12
    part = au_known_mask([4, 26], "partial")  # AU26 is not one of the 12 nodes
    assert part.nonzero().flatten().tolist() == [AUS.index(4)]
    with pytest.raises(ValueError, match="aus_coding"):
        au_known_mask([], "?")


# --------------------------------------------------------------------------- cache → dataset
CLIPS = [  # subject, clip, emotion, aus, aus_coding (None: a file written before the field existed)
    ("sub01", "EP01", "happiness", [6, 12], "coded"),
    ("sub01", "EP02", "disgust", [], "none"),
    ("sub02", "EP03", "happiness", [12], "partial"),
    ("sub02", "EP04", "surprise", [1, 2], None),
]


def _write_cache(root):
    for i, (subject, clip, emotion, aus, coding) in enumerate(CLIPS):
        meta = {"dataset": "casme2", "subject": subject, "clip": clip, "onset": 1, "apex": 5, "offset": 9,
                "aus": aus, "emotion": emotion, "flow_method": "tvl1"}
        if coding is not None:
            meta["aus_coding"] = coding
        obj = {"rois": torch.full((65, 3, 5, 5), float(i)), "flow28": torch.zeros(3, 28, 28),
               "keypoints": torch.zeros(65, 2), "flow": torch.zeros(3, 128, 128, dtype=torch.float16),
               "meta": meta}
        p = root / "clips" / "casme2" / subject / f"{clip}.pt"
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, p)
    return root


def test_cache_round_trip_and_dataset_mask(tmp_path):
    cache = _write_cache(tmp_path)
    meta = load_clip_cache(cache / "clips" / "casme2" / "sub02" / "EP03.pt")["meta"]
    assert meta["aus_coding"] == "partial" and meta["aus"] == [12]
    ds = MEDataset(cache, progress=False)
    by = {d.clip: d for d in ds}
    assert all(d.au_known.shape == (1, 12) for d in ds)
    assert by["EP01"].au_known.tolist() == [[1.0] * 12]
    assert by["EP02"].au_known.tolist() == [[0.0] * 12]
    assert by["EP03"].au_known[0].nonzero().flatten().tolist() == [AUS.index(12)]
    assert by["EP04"].au_known.tolist() == [[1.0] * 12]  # old file without the field: fully coded
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch.au_known.shape == (4, 12) and batch.au.shape == (4, 12)
    au, known = ds.au_labels
    assert au.shape == known.shape == (4, 12)
    sub = ds[torch.tensor([1, 2])]
    assert torch.equal(sub.au_labels[1], known[1:3])
    # the list path (plain Data items) agrees with the fast path; items without a mask are known
    items_au, items_known = dataset_au_labels(list(sub))
    assert torch.equal(items_au, au[1:3]) and torch.equal(items_known, known[1:3])
    bare = [Data(au=torch.ones(1, 12)), Data(au=torch.zeros(1, 12))]
    assert dataset_au_labels(bare)[1].tolist() == [[1.0] * 12] * 2


def test_bad_coding_in_a_cache_file_names_it(tmp_path):
    cache = _write_cache(tmp_path)
    p = cache / "clips" / "casme2" / "sub01" / "EP01.pt"
    obj = torch.load(p, weights_only=True)
    obj["meta"]["aus_coding"] = "unsure"
    torch.save(obj, p)
    with pytest.raises(ValueError, match=r"EP01\.pt: meta aus_coding: expected one of"):
        MEDataset(cache, progress=False, rebuild=True)


# --------------------------------------------------------------------------- loss, weights, metric
def test_masked_entries_get_no_gradient():
    g = torch.Generator().manual_seed(0)
    afe = torch.randn(4, 12, generator=g, requires_grad=True)
    gat = torch.randn(4, 12, generator=g, requires_grad=True)
    out = FedPsyAUOutput(logits=torch.randn(4, 3, generator=g), au_afe=afe, au_gat=gat)
    au = (torch.rand(4, 12, generator=g) < 0.3).float()
    mask = torch.ones(4, 12)
    mask[1] = 0  # a clip without AU coding
    mask[2, 5:] = 0  # a '?' cell: only some AUs known
    loss, _ = fedpsyau_loss(out, torch.tensor([0, 1, 2, 0]), au, au_mask=mask, pos_weight=torch.full((12,), 3.0))
    loss.backward()
    for grad in (afe.grad, gat.grad):
        assert (grad[mask == 0] == 0).all()
        assert (grad[mask == 1] != 0).all()


def test_pos_weight_from_the_training_items_known_labels():
    au = torch.zeros(8, 12)
    au[0, 0] = 1
    au[1, 0] = 1  # an unknown clip's "positive" must not count
    known = torch.ones(8, 12)
    known[1] = 0
    items = [Data(au=au[i:i + 1], au_known=known[i:i + 1]) for i in range(8)]
    w = train_pos_weight(items)
    assert w[0] == pytest.approx(6.0)  # 1 positive, 6 known negatives
    assert torch.equal(w, au_pos_weight(au, known))
    assert train_pos_weight(items, "none") is None
    with pytest.raises(ValueError, match="au_pos_weight"):
        train_pos_weight(items, "balanced")
    with pytest.raises(ValueError, match="au_pos_weight"):
        TrainConfig(au_pos_weight="balanced")


class AllOn(torch.nn.Module):
    """Predicts every AU present (logit +5) and class 0: AU F1 then depends only on the truth counted."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_classes=3, loss_weights=(0.2, 0.8, 0.8))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, rois, flow, beta=None, return_attention=False):
        b = rois.shape[0]
        au = torch.full((b, 12), 5.0) + self.w
        return SimpleNamespace(logits=torch.zeros(b, 3) + self.w, au_afe=au, au_gat=au, attention=None)


def test_evaluate_scores_known_labels_only():
    def item(au_nodes, known):
        au = torch.zeros(1, 12)
        au[0, au_nodes] = 1
        return Data(x=torch.zeros(65, 3, 5, 5), flow=torch.zeros(1, 3, 28, 28), au=au,
                    au_known=torch.full((1, 12), float(known)), y=torch.tensor([0]), num_nodes=65)

    data = [item([0], 1), item([], 0), item([], 0)]  # two unknown clips would be false positives of AU 0
    ev = evaluate(AllOn(), make_loader(data, 3, shuffle=False), num_classes=3)
    assert ev["au_threshold"] == AU_THRESHOLD == 0.5 and ev["au_labels_known"] == 12
    assert ev["au_f1_per_au"][0] == pytest.approx(1.0)  # TP on the known clip, the unknown ones not counted
    assert ev["au_known"].shape == (3, 12)
    old = [Data(**{k: v for k, v in d.items() if k != "au_known"}) for d in data]
    assert evaluate(AllOn(), make_loader(old, 3, shuffle=False), num_classes=3)["au_f1_per_au"][0] \
        == pytest.approx(0.5)  # unknown read as absent: 2 false positives


# --------------------------------------------------------------------------- end to end
def _rare_au_items(n, seed, prevalence=0.05, unknown=1 / 3, first_subject=0):
    """Clips whose mean ROI feature k (k < 12) rises by 1.5 when AU node k is present (noise
    std 1); every AU in ~5 % of the clips; a third of the clips without AU coding (their AUs
    are present in the features all the same, as in a real uncoded clip)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        z = torch.randn(75, generator=g) * 0.1
        z[:12] = torch.randn(12, generator=g)
        au = (torch.rand(12, generator=g) < prevalence).float()
        z[:12] += 1.5 * au
        y = int(torch.randint(0, 3, (1,), generator=g))
        z[60 + y] += 1.5
        x = z.reshape(1, 3, 5, 5).expand(65, 3, 5, 5) + 0.1 * torch.randn(65, 3, 5, 5, generator=g)
        known = 0.0 if float(torch.rand(1, generator=g)) < unknown else 1.0
        items.append(Data(x=x, pos=torch.zeros(65, 2), flow=torch.zeros(1, 3, 28, 28), au=au[None],
                          au_known=torch.full((1, 12), known), y=torch.tensor([y]),
                          subject=f"s{first_subject + i // 20:02d}", dataset="synth", clip=str(i)))
    return FakeSet(items, 3)


class LinearAU(torch.nn.Module):
    """Linear class and AU heads on the mean ROI feature (the FedPsyAU forward signature)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_classes=3, loss_weights=(0.2, 0.8, 0.8))
        self.cls, self.afe, self.gat = torch.nn.Linear(75, 3), torch.nn.Linear(75, 12), torch.nn.Linear(75, 12)

    def forward(self, rois, flow, beta=None, return_attention=False):
        h = rois.reshape(rois.shape[0], 65, 75).mean(1)
        return SimpleNamespace(logits=self.cls(h), au_afe=self.afe(h), au_gat=self.gat(h), attention=None)


def _train_and_score(train, test, au_pos_weight):
    torch.manual_seed(0)
    model = LinearAU()
    cfg = TrainConfig(epochs=20, lr=5e-3, batch_size=64, warmup_epochs=0, beta_schedule=None, progress=False,
                      au_pos_weight=au_pos_weight)
    res = fit(model, train, cfg)  # default loss: fedpsyau_loss
    return res, evaluate(model, make_loader(test, 64, shuffle=False), num_classes=3)


def test_rare_aus_and_unknown_clips_old_vs_new(one_thread):  # noqa: F811
    train, test = _rare_au_items(600, 0), _rare_au_items(300, 1, first_subject=50)
    au, known = dataset_au_labels(train)
    prevalence = (au * known).sum(0) / known.sum(0)
    assert 0.02 < float(prevalence.min()) and float(prevalence.max()) < 0.09
    assert 0.25 < 1 - float(known[:, 0].mean()) < 0.42
    # the old handling: no mask on the items (unknown = no AU), plain BCE
    old_train = FakeSet([Data(**{k: v for k, v in d.items() if k != "au_known"}) for d in train], 3)
    old_res, old = _train_and_score(old_train, test, "none")
    new_res, new = _train_and_score(train, test, "train")
    assert old_res.au_pos_weight is None and min(new_res.au_pos_weight) > 5  # ~19 negatives per positive
    # both scored on the same known test labels (AU F1 of the GAT head, sigmoid >= 0.5)
    assert old["au_f1"] < 0.08 and float((old["au_prob"] >= 0.5).mean()) < 0.01
    assert new["au_f1"] > 0.15 and new["au_f1"] > old["au_f1"] + 0.1
    assert float((new["au_prob"] >= 0.5).mean()) > 0.05
    assert new["uf1"] > 0.9 and old["uf1"] > 0.9  # the emotion task is untouched


def test_synth_unknown_fraction():
    base = SynthConfig(subjects=3, clips_per_subject=12, seed=4)
    plans0 = plan_dataset(base)
    plans = plan_dataset(dataclasses.replace(base, au_unknown_frac=1 / 3))
    assert all(p.au_coded for p in plans0)
    n_unknown = sum(not p.au_coded for p in plans)
    assert 6 <= n_unknown <= 18
    # everything else is drawn as without the option: same clips, same AUs, same rendering seeds
    assert [dataclasses.replace(p, au_coded=True) for p in plans] == plans0
    with pytest.raises(ValueError, match="au_unknown_frac"):
        plan_dataset(dataclasses.replace(base, au_unknown_frac=1.5))


def test_synth_sheet_marks_unknown_clips(tmp_path):
    plans = plan_dataset(SynthConfig(subjects=2, clips_per_subject=6, seed=1, au_unknown_frac=0.5))
    df = read_annotations(write_sheet(plans, tmp_path / "annotations.csv"), "synth")
    want = ["coded" if p.au_coded else "none" for p in plans]
    assert df["aus_coding"].tolist() == want and "none" in want and "coded" in want
    assert all(a == set() for a, c in zip(df["aus"], want) if c == "none")


# --------------------------------------------------------------------------- federated client, CLI
def test_federated_client_weights_from_its_own_training_split(tmp_path, monkeypatch):
    import importlib

    from psyau_graph.federated.task import FedPsyAUTask

    fitmod = importlib.import_module("psyau_graph.train.fit")  # the module (the package exports `fit`)

    ds = MEDataset(_write_cache(tmp_path), progress=False)
    seen = []
    monkeypatch.setattr(fitmod, "train_one_epoch",
                        lambda *a, **kw: seen.append(kw.get("pos_weight")) or {"loss": 0.0})
    for mode in ("train", "none"):
        task = FedPsyAUTask(au_pos_weight=mode)
        task.adopt(ds)
        task.train_epoch(None, task.loader(ds, [0, 2], 2, True, 0), None, None)
    au, known = ds[torch.tensor([0, 2])].au_labels
    assert torch.equal(seen[0], au_pos_weight(au, known)) and seen[1] is None
    with pytest.raises(ValueError, match="au_pos_weight"):
        FedPsyAUTask(au_pos_weight="yes")


def test_cli_options(capsys):
    from psyau_graph.cli import main

    for cmd in ("train", "federate"):
        with pytest.raises(SystemExit) as ex:
            main([cmd, "--help"])
        assert ex.value.code == 0
        assert "--au-pos-weight" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ex:
        main(["train", "--data", "x", "--out", "y", "--au-pos-weight", "always"])
    assert ex.value.code == 2
    assert main(["federate", "--task", "toy", "--data", "x", "--out", "y", "--au-pos-weight", "none"]) == 2
    assert "--au-pos-weight needs --task fedpsyau" in capsys.readouterr().err


def test_protocol_reports_weights_rule_and_known_counts(tmp_path):
    from _fakes_train import TinyConfig
    from psyau_graph.train.protocols import run_protocol

    data = _rare_au_items(60, 3, prevalence=0.2)
    tc = TrainConfig(epochs=1, lr=1e-3, batch_size=16, warmup_epochs=0, beta_schedule=None, progress=False)
    res = run_protocol(data, "kfold:2", TinyConfig(), tc, tmp_path, model_factory=lambda cfg: LinearAU(),
                       plots=False)
    _, known = dataset_au_labels(data)
    pooled = res["pooled"]
    assert pooled["au_labels_known"] == int(known.sum()) and pooled["au_labels"] == 60 * 12
    assert "sigmoid(logit) >= 0.5" in pooled["au_f1_rule"]
    for fold in res["folds"]:
        assert len(fold["au_pos_weight"]) == 12 and min(fold["au_pos_weight"]) >= 1
    assert res["train_config"]["au_pos_weight"] == "train"


def test_resume_of_a_run_from_before_the_option(tmp_path):
    data = _rare_au_items(40, 5, prevalence=0.2)

    def run(mode, resume):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, warmup_epochs=0, beta_schedule=None, progress=False,
                          au_pos_weight=mode)
        return fit(LinearAU(), data, cfg, checkpoint_dir=tmp_path, resume=resume)

    run("none", False)
    ck_path = tmp_path / "last.pt"
    from psyau_graph.train.checkpoint import load_checkpoint

    ck = load_checkpoint(ck_path)
    del ck["train_config"]["au_pos_weight"]  # as written before the option existed (plain BCE)
    torch.save(ck, ck_path)
    with pytest.raises(ValueError, match=r"config differs.*au_pos_weight.*'none', 'train'"):
        run("train", True)
    assert run("none", True).resumed_from == 2
