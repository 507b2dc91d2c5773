"""MEDataset over a preprocessing cache written here in the contract format."""
from __future__ import annotations

import os

import pytest
import torch
from torch_geometric.loader import DataLoader

from psyau_graph.data.dataset import MEDataset
from psyau_graph.data.splits import loso_splits

# (dataset, subject, clip, emotion, aus)
CLIPS = [
    ("samm", "006", "006_1_2", "Anger", [4, 7]),
    ("samm", "006", "006_1_3", "Happiness", [12]),
    ("samm", "007", "007_4_2", "Other", [24]),
    ("samm", "007", "007_5_3", "Surprise", [1, 2, 26]),
    ("casme2", "sub01", "EP19_05f", "disgust", [4, 10]),
    ("casme2", "sub01", "EP03_02", "fear", [4]),  # dropped by megc3 for CASME II
]


def _write_clip(cache, i, ds, subject, clip, emotion, aus):
    g = torch.Generator().manual_seed(i)
    obj = {"rois": torch.full((65, 3, 5, 5), float(i)) + 0.01 * torch.randn(65, 3, 5, 5, generator=g),
           "flow28": torch.full((3, 28, 28), float(i)),
           "keypoints": torch.rand(65, 2, generator=g) * 127,
           "flow": torch.zeros(3, 128, 128, dtype=torch.float16),
           "meta": {"dataset": ds, "subject": subject, "clip": clip, "onset": 1, "apex": 5, "offset": 9,
                    "aus": aus, "emotion": emotion, "flow_method": "tvl1"}}
    p = cache / "clips" / ds / subject / f"{clip}.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, p)
    return p


@pytest.fixture
def cache(tmp_path):
    for i, c in enumerate(CLIPS):
        _write_clip(tmp_path, i, *c)
    return tmp_path


def test_items_and_batches(cache):
    ds = MEDataset(cache, "megc3", progress=False)
    assert len(ds) == 4 and ds.num_classes == 3 and ds.class_names == ["negative", "positive", "surprise"]
    assert ds.excluded == {"Other": 1, "fear": 1}
    by_clip = {ds[i].clip: ds[i] for i in range(len(ds))}
    d = by_clip["006_1_2"]
    assert d.x.shape == (65, 3, 5, 5) and d.pos.shape == (65, 2) and d.flow.shape == (1, 3, 28, 28)
    assert d.au.shape == (1, 12) and d.y.tolist() == [0] and d.subject == "006" and d.dataset == "samm"
    assert d.au[0].nonzero().flatten().tolist() == [2, 5]  # AU4, AU7
    assert by_clip["007_5_3"].au[0].nonzero().flatten().tolist() == [0, 1]  # AU26 is not a node
    assert by_clip["EP19_05f"].y.item() == 0 and by_clip["006_1_3"].y.item() == 1
    assert sorted(ds.subjects) == ["006", "006", "007", "sub01"]
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch.x.shape == (3 * 65, 3, 5, 5) and batch.pos.shape == (3 * 65, 2)
    assert batch.flow.shape == (3, 3, 28, 28) and batch.au.shape == (3, 12) and batch.y.shape == (3,)
    assert isinstance(batch.subject, list) and len(batch.subject) == 3 and all(isinstance(s, str) for s in batch.subject)
    # per-sample content travels with its label: roi value i marks clip i
    for k in range(3):
        item = ds[k]
        assert torch.equal(batch.x[k * 65:(k + 1) * 65], item.x) and batch.y[k] == item.y[0]
        assert torch.equal(batch.flow[k], item.flow[0])


def test_no_scheme_and_dataset_filter(cache):
    ds = MEDataset(cache, progress=False)
    assert len(ds) == 6 and ds.class_names == sorted({c[3].lower() for c in CLIPS})
    samm = MEDataset(cache, "megc3", datasets=["samm"], progress=False)
    assert len(samm) == 3 and set(samm.subjects) == {"006", "007"}
    sub = ds[torch.tensor([0, 5])]
    assert sub.subjects == [ds.subjects[0], ds.subjects[5]] and sub.labels.tolist() == ds.labels[[0, 5]].tolist()


def test_store_reused_and_invalidated(cache):
    ds = MEDataset(cache, "megc3", progress=False)
    store = ds.store_path
    mtime = store.stat().st_mtime_ns
    again = MEDataset(cache, "megc3", progress=False)
    assert again.store_path == store and store.stat().st_mtime_ns == mtime  # reused, not rebuilt
    _write_clip(cache, 9, "samm", "009", "009_1_1", "Fear", [1, 2, 4])
    grown = MEDataset(cache, "megc3", progress=False)
    assert len(grown) == 5 and grown.store_path != store and not store.exists()
    assert not list((cache / "processed").glob(".*tmp"))
    os.remove(cache / "clips" / "samm" / "009" / "009_1_1.pt")
    assert len(MEDataset(cache, "megc3", progress=False)) == 4


def test_loso_over_dataset(cache):
    ds = MEDataset(cache, "megc3", progress=False)
    for tr, te in loso_splits(ds.subjects):
        train, test = ds[torch.as_tensor(tr)], ds[torch.as_tensor(te)]
        assert not set(train.subjects) & set(test.subjects)


def test_errors(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="psyau preprocess"):
        MEDataset(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown"):
        MEDataset(cache, "nope")
    with pytest.raises(ValueError, match="no clip files"):
        MEDataset(cache, datasets=["dfme"])
    only_other = tmp_path / "other"
    _write_clip(only_other, 0, *CLIPS[2])
    with pytest.raises(ValueError, match="keeps none"):
        MEDataset(only_other, "megc3", progress=False)
    bad = torch.load(cache / "clips" / "samm" / "006" / "006_1_2.pt")
    bad["rois"] = torch.zeros(60, 3, 5, 5)
    torch.save(bad, cache / "clips" / "samm" / "006" / "006_1_2.pt")
    with pytest.raises(ValueError, match="006_1_2.pt"):
        MEDataset(cache, "megc3", progress=False)
