"""nn"""
from psyau_graph.nn.dpk_gat_conv import DPKGATConv
from psyau_graph.nn.schedules import BetaSchedule, make_beta_schedule
