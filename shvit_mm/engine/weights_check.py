"""Whether a checkpoint fits the model it is loaded into, where MMEngine only warns.

MMEngine loads ``load_from`` (and the inferencers their ``weights``) with ``strict=False``: a
missing, unexpected or mis-shaped tensor is skipped with a warning and the model runs on with
partly random weights. Here, through :func:`check_weights`:

* testing and inference (``tools/test.py``, ``tools/image_demo.py``,
  :func:`shvit_mm.apis.build_inferencer`): any difference is a :class:`WeightsMismatchError` that
  says how many tensors differ, in which parts of the model (``backbone``, ``neck``,
  ``roi_head``...) and the likely cause (another SHViT variant, another codebase's model, a
  backbone-only file);
* fine-tuning (``tools/train.py`` with ``load_from``): heads that differ are normal (another class
  count) and are summed up in one log line; a backbone or neck that differs stops the run unless
  the config sets ``load_from_allow_mismatch=True``.

The tools declare :class:`WeightsCheckHook` with :func:`add_weights_check`.
"""
from __future__ import annotations

import logging
import re
from collections import Counter, OrderedDict
from typing import Dict, List

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS

from shvit_mm.models.backbones.shvit_weights import (CheckpointFormatError, infer_arch,
                                                     to_official_layout)

__all__ = ['WeightsMismatchError', 'check_weights', 'WeightsCheckHook', 'add_weights_check',
           'ALLOW_KEY']

#: the config key that lets fine-tuning load a checkpoint whose backbone or neck differs
ALLOW_KEY = 'load_from_allow_mismatch'
TRUNK = ('backbone', 'neck')
_HEADS = {'detection': ('rpn_head', 'roi_head', 'bbox_head'),
          'segmentation': ('decode_head', 'auxiliary_head')}
_WHAT = {'mis_shaped': 'mis-shaped', 'missing': 'missing from the checkpoint',
         'unexpected': 'not in the model'}


class WeightsMismatchError(CheckpointFormatError):
    """The checkpoint's tensors do not fit the model of the config."""


def _state_dict(checkpoint) -> 'OrderedDict':
    """What MMEngine's ``_load_checkpoint_to_model`` loads: ``state_dict`` (or the checkpoint
    itself) without DDP's ``module.`` prefix."""
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    return OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in sd.items())


def _compare(own: dict, sd: dict) -> Dict[str, List[str]]:
    """Mis-shaped, missing and unexpected keys; a missing ``num_batches_tracked`` is ignored, as
    MMEngine ignores it."""
    return dict(
        mis_shaped=[k for k, v in sd.items()
                    if k in own and tuple(getattr(v, 'shape', ())) != tuple(own[k].shape)],
        missing=[k for k in own if k not in sd and not k.endswith('num_batches_tracked')],
        unexpected=[k for k in sd if k not in own])


def _parts(keys) -> List[str]:
    return list(dict.fromkeys(k.split('.', 1)[0] for k in keys))


def _summary(diff: Dict[str, List[str]]) -> str:
    """E.g. ``'212 tensors differ: 180 mis-shaped (backbone 150, neck 30); 12 missing ...'``."""
    groups = ['{} {} ({})'.format(len(keys), _WHAT[what], ', '.join(
        f'{p} {n}' for p, n in Counter(k.split('.', 1)[0] for k in keys).items()))
        for what, keys in diff.items() if keys]
    return f'{sum(map(len, diff.values()))} tensors differ: ' + '; '.join(groups)


def _examples(diff: Dict[str, List[str]], own: dict, sd: dict) -> str:
    """The first key of each kind of difference, a mis-shaped one with both shapes."""
    keys = [(what, keys[0]) for what, keys in diff.items() if keys]
    return '; '.join(f'{k} {tuple(sd[k].shape)} in the checkpoint vs {tuple(own[k].shape)} in '
                     'the model'
                     if what == 'mis_shaped' else f'{k} {_WHAT[what]}' for what, k in keys)


def _arch(sd: dict) -> str:
    from shvit_mm.models.backbones import SHViT
    arch = infer_arch({k[9:]: v for k, v in sd.items() if k.startswith('backbone.')},
                      SHViT.arch_zoo)
    return arch and (f'SHViT-{arch.upper()}' if arch in SHViT.arch_zoo else f'SHViT {arch}')


def _likely_cause(model, checkpoint, sd: dict, own: dict, diff: Dict[str, List[str]]) -> str:
    """Another codebase's model, a backbone-only file, another backbone variant, another class
    count, or (failing those) another config."""
    from shvit_mm.models.backbones import SHViT
    ck_parts, own_parts = set(_parts(sd)), set(_parts(own))
    kinds = [next(((kind, [p for p in heads if p in parts]) for kind, heads in _HEADS.items()
                   if parts & set(heads)), (None, [])) for parts in (ck_parts, own_parts)]
    causes = []
    if kinds[0][0] and kinds[1][0] and kinds[0][0] != kinds[1][0]:
        causes.append(f"the checkpoint is a {kinds[0][0]} model ({', '.join(kinds[0][1])}) and "
                      f"the config builds a {kinds[1][0]} model ({', '.join(kinds[1][1])}): a "
                      "checkpoint of the other codebase")
    if 'backbone' not in ck_parts or ck_parts == {'backbone'}:
        try:
            official = infer_arch(to_official_layout(checkpoint)[0], {})
        except CheckpointFormatError:
            official = None
        if official is not None or ck_parts == {'backbone'}:
            causes.append("a backbone-only (ImageNet) file, not a whole model's checkpoint: "
                          "fine-tune from it with the backbone's init_cfg=dict(type='Pretrained', "
                          'checkpoint=...)')
    ck_arch, own_arch = _arch(sd), _arch(own)
    deployed = getattr(getattr(model, 'backbone', None), 'arch_name', None)
    if own_arch is None and deployed in SHViT.arch_zoo:  # a fused (deploy) SHViT
        own_arch = f'SHViT-{deployed.upper()}'
    if 'backbone' in ck_parts and ck_arch != own_arch:
        theirs = own_arch or type(getattr(model, 'backbone', None)).__name__
        causes.append(f"the checkpoint's backbone has {ck_arch} shapes and the config's is "
                      f"{theirs}: another {'variant' if own_arch else 'backbone'}" if ck_arch else
                      f"the checkpoint's backbone is not an SHViT (the config's is {theirs})")
    if not causes and not diff['missing'] and not diff['unexpected'] and \
            not set(_parts(diff['mis_shaped'])) & set(TRUNK):
        causes.append('only head tensors differ in shape: the checkpoint was trained for another '
                      'number of classes (or other head settings)')
    changed = _parts(k for keys in diff.values() for k in keys)
    return '; '.join(causes) or f"another config's model (other {', '.join(changed)} settings)"


def _as_loaded(model, sd: dict) -> dict:
    """``sd`` as the model will load it: a deploy (fused) SHViT fuses unfused weights on the way in
    (its ``load_state_dict`` pre-hook), so a training checkpoint fits it."""
    for name, module in model.named_modules():
        hook = getattr(module, '_fuse_incoming_state_dict', None)
        if hook is not None and getattr(module, 'fused', False):
            hook(module, sd, f'{name}.' if name else '', {}, False, [], [], [])
    return sd


def _bare(model):
    """The model under DDP and test-time-augmentation wrappers, which is what MMEngine loads."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_weights(model, checkpoint, source: str, mode: str = 'test',
                  allow_mismatch: bool = False) -> Dict[str, List[str]]:
    """Check ``checkpoint`` (a loaded file) against ``model`` before MMEngine loads it.

    ``mode='test'``: raise :class:`WeightsMismatchError` on any difference. ``mode='finetune'``:
    raise only when the backbone or neck differ (unless ``allow_mismatch``); otherwise log one
    line and make the checkpoint's state dict fit (tensors that do not fit are replaced by the
    model's own, so they keep their initialisation and MMEngine has nothing to warn about).
    Returns the differing keys: ``dict(mis_shaped=[...], missing=[...], unexpected=[...])``.
    """
    if mode not in ('test', 'finetune'):
        raise ValueError(f"mode must be 'test' or 'finetune', got {mode!r}")
    model = _bare(model)
    own, sd = model.state_dict(), _as_loaded(model, _state_dict(checkpoint))
    diff = _compare(own, sd)
    if not any(diff.values()):
        return diff
    cause = _likely_cause(model, checkpoint, sd, own, diff)
    trunk = [p for p in TRUNK if p in _parts(k for keys in diff.values() for k in keys)]
    if mode == 'test':
        raise WeightsMismatchError(
            f'{source} does not fit the model of the config: {_summary(diff)}; e.g. '
            f'{_examples(diff, own, sd)}. Likely cause: {cause}. Results with these weights '
            'would be meaningless: use the config the checkpoint was trained with, or a '
            'checkpoint of this config.')
    if trunk and not allow_mismatch:
        parts = ' and '.join(trunk)
        raise WeightsMismatchError(
            f'load_from {source}: the {parts} do not fit: {_summary(diff)}; e.g. '
            f'{_examples(diff, own, sd)}. Likely cause: {cause}. Fine-tuning would start from '
            f'partly untrained {parts} weights; to load the tensors that fit anyway (the others '
            f'keep their initialisation), add --cfg-options {ALLOW_KEY}=True.')
    bad = set(diff['mis_shaped'] + diff['unexpected'])
    state = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    for key in [k for k in state if re.sub(r'^module\.', '', k) in bad]:
        del state[key]
    state.update((k, own[k]) for k in diff['missing'] + diff['mis_shaped'])
    reason = f'{ALLOW_KEY}=True' if trunk else 'normal when fine-tuning for another class count'
    print_log(f'load_from {source}: {_summary(diff)}; these are not loaded and keep their '
              f'initialisation ({reason}). Likely cause: {cause}.', logger='current',
              level=logging.WARNING if trunk else logging.INFO)
    return diff


@HOOKS.register_module()
class WeightsCheckHook(Hook):
    """Apply :func:`check_weights` to the checkpoint ``Runner.load_checkpoint`` reads
    (``load_from``; a resumed run is the same model and is not checked), before it is loaded."""

    priority = 'VERY_HIGH'  # before any other hook reads the checkpoint

    def __init__(self, mode: str = 'test', allow_mismatch: bool = False) -> None:
        self.mode, self.allow_mismatch = mode, allow_mismatch

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner.cfg.get('resume', False):
            check_weights(runner.model, checkpoint, runner.cfg.get('load_from'), self.mode,
                          self.allow_mismatch)


def add_weights_check(cfg, mode: str) -> None:
    """Declare a :class:`WeightsCheckHook` in ``cfg.custom_hooks`` when ``cfg.load_from`` is to be
    loaded (not resumed); ``cfg.load_from_allow_mismatch`` is the fine-tuning opt-in."""
    if cfg.get('load_from') and not cfg.get('resume', False):
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(
            type='WeightsCheckHook', mode=mode, allow_mismatch=bool(cfg.get(ALLOW_KEY, False)))]
