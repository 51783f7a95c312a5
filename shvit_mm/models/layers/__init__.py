"""Transformer layers (single-head Deformable DETR)."""
