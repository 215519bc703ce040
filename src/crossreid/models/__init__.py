"""Backbones, pooling, heads and weight loading for re-ID networks."""

from crossreid.models.build import ReIDNet, build_model, freeze_from
from crossreid.models.heads import BNNeckHead, EmbeddingHead, HeadOutput
from crossreid.models.layers import AvgPool, BNNeck, GatedAttention, GeM, NonLocalBlock, build_pooling
from crossreid.models.resnet import ARCHS, STAGES, ResNet, ResNetStem, build_resnet, resnet18, resnet34, resnet50
from crossreid.models.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "ARCHS", "STAGES", "AvgPool", "BNNeck", "BNNeckHead", "EmbeddingHead", "GatedAttention", "GeM",
    "HeadOutput", "LoadReport", "NonLocalBlock", "ReIDNet", "ResNet", "ResNetStem", "build_model",
    "build_pooling", "build_resnet", "freeze_from", "load_weights", "read_state_dict",
    "resnet18", "resnet34", "resnet50",
]
