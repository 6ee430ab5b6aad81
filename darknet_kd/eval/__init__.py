"""Evaluation: Darknet's mAP (voc_map) and COCO mAP through pycocotools (coco)."""
from .voc_map import DarknetMap, MapResult, box_iou_matrix, compute_map

__all__ = ["DarknetMap", "MapResult", "box_iou_matrix", "compute_map"]
