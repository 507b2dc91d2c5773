"""preprocess"""
from .flow import METHODS, FlowError, apex_window_flow, compute_flow, compute_flow_batch
from .strain import flow_with_strain, optical_strain
from .tvl1 import TVL1Params, tvl1_flow
