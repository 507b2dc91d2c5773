"""preprocess"""
from .flow import METHODS, FlowError, apex_window_flow, compute_flow, compute_flow_batch
from .strain import flow_with_strain, optical_strain
from .tvl1 import TVL1Params, tvl1_flow
from .frames import Clip, FrameError, MissingFrameError, open_clip, select_frames
from .landmarks import LandmarkBackendError, NoFaceError, detect_landmarks, track_landmarks
from .align import AlignConfig, align_clip, alignment_matrix, transform_points, warp_frames
from .keypoints import NUM_KEYPOINTS, landmarks_to_keypoints, roi_groups
from .rois import extract_rois, face_flow_map
from .pipeline import ClipFeatures, preprocess_clip
from .batch import load_clip_cache, preprocess_dataset
