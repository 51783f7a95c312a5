# MMDetection's default runtime plus shvit_mm's training safety, for every detection config:
# crash-safe checkpoints (SafeCheckpointHook), a stop at the first non-finite loss (FiniteLossHook)
# and, with several processes, validation on the checkpoint's BatchNorm statistics
# (RankZeroBuffersHook). Opt out with default_hooks.checkpoint.type='CheckpointHook' / custom_hooks=[].
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RankZeroBuffersHook')]
