"""nn"""
from psyau_graph.nn.dpk_gat_conv import DPKGATConv
from psyau_graph.nn.schedules import BetaSchedule, make_beta_schedule
from psyau_graph.nn.model import FedPsyAU, FedPsyAUConfig, FedPsyAUOutput, fedpsyau_loss
from psyau_graph.nn.ablations import ABLATIONS
