"""DPKGATConv on heterogeneous graphs (``to_hetero``) and under ``torch_geometric.explain``."""
import pytest
import torch

from torch_geometric.explain import Explainer, GNNExplainer
from torch_geometric.nn import GATConv, to_hetero

from psyau_graph.nn import DPKGATConv

EDGE_TYPES = [("author", "writes", "paper"), ("paper", "cites", "paper")]
METADATA = (["author", "paper"], EDGE_TYPES + [("paper", "rev_writes", "author")])


def _hetero_graph():
    g = torch.Generator().manual_seed(0)
    x = {"author": torch.randn(5, 3, generator=g), "paper": torch.randn(6, 7, generator=g)}
    ei = {
        ("author", "writes", "paper"): torch.tensor([[0, 1, 2, 3, 4, 0, 2], [0, 0, 1, 2, 3, 4, 5]]),
        ("paper", "cites", "paper"): torch.tensor([[1, 2, 3, 4, 5, 0], [0, 0, 1, 1, 2, 3]]),
    }
    w = ei[("author", "writes", "paper")]
    ei[("paper", "rev_writes", "author")] = w.flip(0)
    prior = {et: torch.rand(e.size(1), generator=g) + 0.1 for et, e in ei.items()}
    return x, ei, prior


class _Net(torch.nn.Module):
    """Two DPKGATConv layers with lazy bipartite inputs, written for a homogeneous graph."""

    def __init__(self, conv_cls=DPKGATConv, **kw):
        super().__init__()
        self.conv1 = conv_cls((-1, -1), 8, heads=2, **kw)
        self.conv2 = conv_cls((-1, -1), 4, heads=1, **kw)

    def forward(self, x, edge_index, edge_prior):
        x = self.conv1(x, edge_index, edge_prior=edge_prior, beta=0.5).relu()
        return self.conv2(x, edge_index, edge_prior=edge_prior, beta=0.5)


class _OneLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = DPKGATConv((-1, -1), 4, heads=2, add_self_loops=False)

    def forward(self, x, edge_index, edge_prior):
        return self.conv(x, edge_index, edge_prior=edge_prior, beta=0.7)


def test_to_hetero_forward_backward_with_per_edge_type_priors():
    x, ei, prior = _hetero_graph()
    torch.manual_seed(1)
    model = to_hetero(_Net(add_self_loops=False), METADATA, aggr="sum")
    out = model(x, ei, prior)
    assert set(out) == {"author", "paper"}
    assert out["author"].shape == (5, 4) and out["paper"].shape == (6, 4)
    (out["author"].sum() + out["paper"].square().sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    # the priors matter, per edge type
    prior2 = dict(prior)
    prior2[("paper", "cites", "paper")] = prior[("paper", "cites", "paper")].flip(0)
    out2 = model(x, ei, prior2)
    assert not torch.allclose(out2["paper"], out["paper"])


def test_to_hetero_layer_is_the_sum_of_bipartite_layers():
    x, ei, prior = _hetero_graph()
    torch.manual_seed(2)
    model = to_hetero(_OneLayer(), METADATA, aggr="sum")
    out = model(x, ei, prior)
    convs = {et: model.conv["__".join(et)] for et in ei}
    expect = sum(convs[et]((x[et[0]], x["paper"]), ei[et], prior[et], beta=0.7) for et in EDGE_TYPES)
    torch.testing.assert_close(out["paper"], expect)
    rev = ("paper", "rev_writes", "author")
    torch.testing.assert_close(out["author"], convs[rev]((x["paper"], x["author"]), ei[rev], prior[rev], beta=0.7))
    # each edge type's attention at beta = 1 is its own prior normalised over each target
    _, (e, alpha) = convs[EDGE_TYPES[1]]((x["paper"], x["paper"]), ei[EDGE_TYPES[1]], prior[EDGE_TYPES[1]],
                                          beta=1.0, return_attention_weights=True)
    p = prior[EDGE_TYPES[1]]
    mass = torch.zeros(6).index_add_(0, e[1], p)
    torch.testing.assert_close(alpha, (p / mass[e[1]]).unsqueeze(1).expand(-1, 2))


class _HomoNet(torch.nn.Module):
    def __init__(self, conv_cls):
        super().__init__()
        self.conv1 = conv_cls(5, 8, heads=2, add_self_loops=True)
        self.conv2 = conv_cls(16, 3, heads=1, add_self_loops=True)

    def forward(self, x, edge_index, **kw):
        x = self.conv1(x, edge_index, **kw).relu()
        return self.conv2(x, edge_index, **kw)


@pytest.mark.parametrize("conv_cls", [DPKGATConv, GATConv])
def test_gnnexplainer_runs_on_a_model_with_the_layer(conv_cls):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0, 2], [1, 2, 3, 4, 5, 6, 7, 0, 4, 6]])
    torch.manual_seed(4)
    model = _HomoNet(conv_cls)
    explainer = Explainer(
        model=model, algorithm=GNNExplainer(epochs=20), explanation_type="model",
        node_mask_type="attributes", edge_mask_type="object",
        model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"),
    )
    kw = {} if conv_cls is GATConv else dict(edge_prior=torch.rand(10, generator=g), beta=0.4)
    torch.manual_seed(5)
    explanation = explainer(x, edge_index, index=3, **kw)
    assert explanation.edge_mask.shape == (10,) and explanation.node_mask.shape == (8, 5)
    assert bool((explanation.edge_mask >= 0).all() and (explanation.edge_mask <= 1).all())
    # edges that cannot reach node 3 within two hops get no mass; some edge that can does
    far = edge_index[1] == 7
    assert bool((explanation.edge_mask[far] == 0).all())
    assert float(explanation.edge_mask.max()) > 0
