"""Every ablation setting of paper Table 3 builds, trains one step and has the right parts."""
from __future__ import annotations

import pytest
import torch

from psyau_graph.nn import ABLATIONS, FedPsyAU, FedPsyAUConfig, fedpsyau_loss
from psyau_graph.nn.ablations import SWITCHES, ablation_switches


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small models run faster on one intra-op thread (no thread sync on tiny ops)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# setting -> (LFE, SSE, local GAT, global GAT, dual stream, grouping, psych prior, data prior)
EXPECTED = {
    "I": (0, 0, 0, 0, 0, 0, 0, 0),
    "II": (1, 0, 0, 0, 1, 1, 0, 0),
    "III": (1, 1, 0, 0, 1, 1, 0, 0),
    "IV": (1, 1, 1, 0, 1, 1, 1, 1),
    "V": (1, 1, 0, 1, 1, 1, 1, 1),
    "VI": (1, 1, 1, 1, 1, 1, 1, 1),
    "VII": (1, 1, 1, 1, 1, 0, 1, 1),
    "VIII": (1, 1, 1, 1, 1, 1, 1, 1),
    "IX": (1, 1, 1, 1, 1, 1, 0, 0),
    "X": (1, 1, 1, 1, 1, 1, 1, 0),
    "XI": (1, 1, 1, 1, 1, 1, 0, 1),
    "XII": (1, 1, 1, 1, 1, 1, 1, 1),
}


def test_table_is_complete():
    assert set(ABLATIONS) == set(EXPECTED)
    for name, flags in EXPECTED.items():
        assert tuple(int(ablation_switches(name)[s]) for s in SWITCHES) == flags
    assert ablation_switches("iii") == ablation_switches("III")
    with pytest.raises(ValueError, match="expected one of"):
        ablation_switches("XIII")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_ablation_builds_runs_and_has_its_parts(name):
    torch.manual_seed(0)
    lfe, sse, local, glob, dual, group, psych, data = map(bool, EXPECTED[name])
    config = FedPsyAUConfig.from_ablation(name, num_classes=4)
    assert config.ablation == name and config.num_classes == 4
    model = FedPsyAU(config)
    au = model.au_net
    assert (au is not None) == dual
    assert (model.dsi.au is not None) == dual
    if dual:
        assert (au.lfe is not None) == lfe
        assert (au.sse is not None) == sse
        assert (len(au.afe.branches) == 4) == group and (len(au.afe.branches) == 1) != group
        assert (au.gat is not None) == (local or glob)
        if au.gat is not None:
            assert (au.gat.upper is not None) == local and (au.gat.lower is not None) == local
            assert (au.gat.whole is not None) == glob
            block = au.gat.upper or au.gat.whole
            assert (block.prior is not None) == data
            complete = bool((block.adj[:6, :6] == 1).all()) if local else bool((block.adj[:6, 6:] == 1).all())
            assert complete != psych

    g = torch.Generator().manual_seed(1)
    rois, flow = torch.randn(3, 65, 3, 5, 5, generator=g), torch.randn(3, 3, 28, 28, generator=g)
    y, au_t = torch.tensor([0, 3, 1]), (torch.rand(3, 12, generator=g) > 0.5).float()
    out = model(rois, flow, return_attention=True)
    assert out.logits.shape == (3, 4)
    assert (out.au_afe is not None) == dual
    assert (out.au_gat is not None) == (local or glob)
    if local or glob:
        assert {k.split(".")[0] for k in out.attention} == {r for r, on in
                                                            (("upper", local), ("lower", local), ("global", glob)) if on}
    loss, parts = fedpsyau_loss(out, y, au_t)
    assert torch.isfinite(loss)
    assert (parts["au_afe"] is None) != dual and (parts["au_gat"] is None) != (local or glob)
    if not dual:  # setting I: the loss is the weighted CE alone and AU targets are not needed
        torch.testing.assert_close(loss, 0.2 * torch.nn.functional.cross_entropy(out.logits, y))
        torch.testing.assert_close(fedpsyau_loss(out, y, None)[0], loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_flow_only_model_ignores_rois():
    torch.manual_seed(0)
    model = FedPsyAU(FedPsyAUConfig.from_ablation("I")).eval()
    flow = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(model(None, flow).logits, model(torch.randn(2, 65, 3, 5, 5), flow).logits)


def test_explicit_switch_overrides_setting():
    c = FedPsyAUConfig.from_ablation("VI", data_prior=False)
    assert c.psych_prior and not c.data_prior and c.ablation == "VI"
    with pytest.raises(ValueError, match="dual_stream"):
        FedPsyAUConfig.from_ablation("I", local_gat=True)
