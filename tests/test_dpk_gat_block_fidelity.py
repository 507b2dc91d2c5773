"""DPK-GAT block and AU heads against the paper/authors: output ELU, feature dropout, head dropout."""
from __future__ import annotations

import pytest
import torch

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig
from psyau_graph.nn.afe import AUHead
from psyau_graph.nn.dpk_gat import DPKGATBlock, region_graph


@pytest.mark.parametrize("impl", ["dense", "sparse"])
def test_block_output_is_elu_of_aggregation_plus_residual(impl):
    """Paper eq. 5: h = ELU(Σ α f) + f, so h − f ≥ −1 however negative the aggregation is."""
    torch.manual_seed(0)
    adj, prior = region_graph("upper")
    block = DPKGATBlock(adj, prior, impl=impl).eval()
    with torch.no_grad():
        block.conv2.bias.fill_(-5.0)  # drive the second layer's aggregation strongly negative
    x = torch.randn(3, 6, 25)
    out = block(x, beta=0.3)
    assert (out - x).min() >= -1.0 - 1e-6
    assert (out - x).min() < -0.9  # the ELU saturates, it is not the identity


def test_block_feature_dropout_in_training_only():
    torch.manual_seed(0)
    adj, prior = region_graph("lower")
    block = DPKGATBlock(adj, prior, dropout=0.0, feat_dropout=0.5)  # no attention dropout: only features drop
    x = torch.randn(4, 6, 25)
    block.train()
    assert not torch.allclose(block(x), block(x))
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    quiet = DPKGATBlock(adj, prior, dropout=0.0, feat_dropout=0.0).train()
    quiet.load_state_dict(block.state_dict())
    torch.testing.assert_close(quiet(x), block.eval()(x))
    with pytest.raises(ValueError, match="feat_dropout"):
        DPKGATBlock(adj, prior, feat_dropout=1.0)


def test_au_head_dropout_and_unchanged_parameter_names():
    torch.manual_seed(0)
    head = AUHead(dropout=0.5)
    assert sorted(head.state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    h = torch.randn(8, 12, 25)
    head.train()
    assert not torch.allclose(head(h), head(h))
    head.eval()
    ref = head.mlp[2](torch.relu(head.mlp[0](h.flatten(1))))
    torch.testing.assert_close(head(h), ref)


def test_model_config_passes_the_dropouts():
    m = FedPsyAU(FedPsyAUConfig(feat_dropout=0.25, au_dropout=0.4)).au_net
    assert m.afe_head.dropout == 0.4 and m.gat_head.dropout == 0.4
    assert m.gat.whole.feat_dropout == 0.25 and m.gat.upper.feat_dropout == 0.25
    with pytest.raises(ValueError, match="au_dropout"):
        FedPsyAUConfig(au_dropout=-0.1)
