# MMSegmentation's default runtime plus shvit_mm's loss guard (FiniteLossHook) and, with several
# processes, validation on the checkpoint's BatchNorm statistics (RankZeroBuffersHook), for every
# segmentation config.
# SafeCheckpointHook is set per config: MMSeg's schedule bases hold default_hooks; no shared keys.
_base_ = 'mmseg::_base_/default_runtime.py'
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

custom_hooks = [dict(type='FiniteLossHook'), dict(type='RankZeroBuffersHook')]
