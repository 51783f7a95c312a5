"""The one place that reads configs and builds models from them, for the tools and the benchmarks.

* :func:`read_config`: a config path (or ``mmdet::`` / ``mmseg::`` / ``mmpretrain::`` name) with
  ``--cfg-options`` applied;
* :func:`codebase_of` / :func:`setup_registries`: which OpenMMLab codebase a config belongs to (its
  ``default_scope``) and registering that codebase's and shvit_mm's components;
* :func:`build_model`: ``cfg.model`` built in that scope, without downloading pretrained weights
  unless asked (speed and FLOPs do not depend on the weights' values).
"""
from __future__ import annotations

import copy
import importlib
import logging
import os.path as osp
from typing import Any, Dict, Optional, Union

import torch.nn as nn
from mmengine.config import Config

__all__ = ['CODEBASES', 'ConfigError', 'read_config', 'codebase_of', 'setup_registries',
           'strip_pretrained', 'build_model']

#: default scope -> the package whose ``utils.register_all_modules`` registers its components
CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


class ConfigError(FileNotFoundError):
    """A config that cannot be read; the message names it."""


def read_config(config: Union[str, Config], cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read ``config`` (a path, or ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'`` for a config
    shipped inside a codebase) and merge ``cfg_options`` (dotted keys, as ``--cfg-options``)."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        path = str(config)
        scope, sep, rel = path.partition('::')
        if sep and scope in CODEBASES:
            package = importlib.import_module(scope)
            path = osp.join(osp.dirname(package.__file__), '.mim', 'configs', rel)
        if not osp.isfile(path):
            raise ConfigError(f'config file not found: {config}')
        cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def codebase_of(cfg: Config) -> str:
    """``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``: the config's ``default_scope`` (the codebases'
    default runtimes set it), ``'mmdet'`` when it has none."""
    scope = cfg.get('default_scope') or 'mmdet'
    if scope not in CODEBASES:
        raise ValueError(f"default_scope={scope!r}: shvit_mm's tools run configs of {CODEBASES}")
    return scope


def setup_registries(cfg: Config) -> str:
    """Register the config's codebase and shvit_mm, make that codebase the default scope, and
    return its name."""
    import shvit_mm  # noqa: F401  (registers the backbone, hooks and the installed adapters)
    scope = codebase_of(cfg)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    cfg.default_scope = scope
    return scope


def strip_pretrained(model_cfg: Any) -> Any:
    """Drop every ``init_cfg=dict(type='Pretrained', ...)`` (recursively) and ``pretrained=`` from a
    model config, in place; returns it."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('pretrained') is not None:
            model_cfg['pretrained'] = None
        init = model_cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            model_cfg['init_cfg'] = None
        elif isinstance(init, list):
            model_cfg['init_cfg'] = [i for i in init if not (
                isinstance(i, dict) and i.get('type') == 'Pretrained')] or None
        for v in model_cfg.values():
            strip_pretrained(v)
    elif isinstance(model_cfg, (list, tuple)):
        for v in model_cfg:
            strip_pretrained(v)
    return model_cfg


def build_model(cfg: Union[str, Config], cfg_options: Optional[Dict[str, Any]] = None,
                pretrained: bool = False, init: bool = True, device: str = 'cpu',
                mode: str = 'eval') -> nn.Module:
    """Build ``cfg.model`` in the config's codebase.

    Args:
        cfg: a config or anything :func:`read_config` reads.
        pretrained: keep ``Pretrained`` initialisers (they may download); default False.
        init: run ``init_weights()`` (quietly: MMEngine logs every parameter at INFO level).
        mode: ``'eval'`` or ``'train'``.
    """
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS, DefaultScope

    cfg = read_config(cfg, cfg_options)
    if 'model' not in cfg:
        raise KeyError('the config has no `model` entry')
    scope = setup_registries(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained:
        strip_pretrained(model_cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    if init:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    model = model.to(device)
    return model.train() if mode == 'train' else model.eval()
