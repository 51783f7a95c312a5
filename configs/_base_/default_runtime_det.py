# MMDetection's default runtime plus shvit_mm's training safety. Every detection config of this
# project inherits it, so the safety is part of the config itself: tools/train.py, MMEngine's
# Runner.from_cfg(cfg).train(), `mim train mmdet` and a user's own script all train with it.
#   * SafeCheckpointHook: MMEngine's CheckpointHook (same arguments) writing each checkpoint to
#     `<name>.part` and renaming it into place, so a killed run never leaves a partial file under a
#     checkpoint name and `--resume` always finds a complete one;
#   * FiniteLossHook: stops at the first non-finite loss, before anything from it is saved.
# Opt out with default_hooks.checkpoint.type='CheckpointHook' / custom_hooks=[] in a child config.
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='FiniteLossHook')]
