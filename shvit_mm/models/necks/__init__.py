"""Necks for stride-16/32/64 backbones."""
