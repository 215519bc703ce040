"""Evaluation: distances, CMC / mAP / mINP under exclusion rules, protocols, scoring."""

# Built-in protocols: importing a module registers it (a new protocol adds its module here).
from crossreid.evaluation import llcm_protocols, regdb_protocols, rgbd_protocols, synthetic_protocols, sysu_protocols
from crossreid.evaluation.distance import pairwise_distance
from crossreid.evaluation.metrics import (
    NO_EXCLUSION,
    SAME_CAMERA,
    SAME_FRAME,
    SAME_ID_AND_CAMERA,
    SAME_ID_AND_SEQUENCE,
    SYSU_LOCATION,
    ExclusionRule,
    Metrics,
    compute_metrics,
)
from crossreid.evaluation.protocols import (
    Protocol,
    Trial,
    evaluate_protocol,
    get_protocol,
    protocol_names,
    register_protocol,
)
from crossreid.evaluation.results import ProtocolResult
from crossreid.evaluation.score import score_arrays, score_features

__all__ = [
    "ExclusionRule", "Metrics", "NO_EXCLUSION", "Protocol", "ProtocolResult", "SAME_CAMERA", "SAME_FRAME",
    "SAME_ID_AND_CAMERA", "SAME_ID_AND_SEQUENCE", "SYSU_LOCATION", "Trial", "compute_metrics",
    "evaluate_protocol", "get_protocol", "pairwise_distance", "protocol_names", "register_protocol",
    "score_arrays", "score_features",
]
