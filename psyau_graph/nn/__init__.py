"""nn"""
from psyau_graph.nn.dpk_gat_conv import DPKGATConv
from psyau_graph.nn.schedules import BetaSchedule, make_beta_schedule
from psyau_graph.nn.model import FedPsyAU, FedPsyAUConfig, FedPsyAUOutput, fedpsyau_loss
from psyau_graph.nn.ablations import ABLATIONS, ablation_switches
from psyau_graph.nn.lfe import LFE
from psyau_graph.nn.sse import SSE
from psyau_graph.nn.afe import AFE, AUHead, GroupSE
from psyau_graph.nn.dpk_gat import DPKGAT, DPKGATBlock
from psyau_graph.nn.dsi import DSI
from psyau_graph.nn.model import AUModule
