#!/usr/bin/env bash
# One-command setup for shvit_mm: takes a machine with only Python 3 to a working environment.
#
#   bash tools/install.sh
#
# Installs into the Python that `python` (or $PYTHON) names: PyTorch + torchvision (a compatible pair
# already installed is kept), setuptools<82, MMCV 2.1.0 with its compiled ops (built from the sdist;
# about 10 minutes on 2 cores, the wheel is cached under ~/.cache/shvit_mm), mmdet 3.3.0,
# mmpretrain 1.2.0, mmsegmentation 1.2.2, pycocotools, this package in editable mode with its test extras,
# and MMDeploy 1.3.1 without its dependency pins (requirements/deploy.txt).
# Steps that are already satisfied are skipped, so a second run takes seconds.
# Every step names itself when it fails.
set -euo pipefail

PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHVIT_MM_CACHE:-$HOME/.cache/shvit_mm}
TORCH_SPEC=${SHVIT_MM_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0
PIP=("$PY" -m pip install --disable-pip-version-check)
export PIP_PROGRESS_BAR=off

step=""
start=$(date +%s)
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "install.sh: FAILED at step: ${step} (exit $rc)" >&2; fi' EXIT
say() { step="$1"; echo "==> [$(( $(date +%s) - start ))s] $1"; }

say "inspect the environment"
# One interpreter start answers every question: which parts are missing?
STATE=$("$PY" - "$ROOT" "$MMCV_VERSION" <<'PYEOF'
import importlib.metadata as md, os, sys
root, mmcv_version = sys.argv[1], sys.argv[2]
assert sys.version_info >= (3, 8), 'Python >= 3.8 is required'
state = []
try:
    import torch, torchvision  # noqa: F401
    from torchvision.ops import nms  # noqa: F401  (torchvision's C++ ops match this torch)
    state.append('torch=ok')
except Exception:
    state.append('torch=missing')
try:
    import mmcv, mmcv._ext  # noqa: F401
    state.append('mmcv=ok' if mmcv.__version__ == mmcv_version else 'mmcv=missing')
except Exception:
    state.append('mmcv=missing')
try:
    from packaging.requirements import Requirement
    reqs = []
    for name in ('runtime.txt', 'tests.txt'):
        with open(os.path.join(root, 'requirements', name)) as f:
            reqs += [l.split('#')[0].strip() for l in f if l.split('#')[0].strip()]
    for r in map(Requirement, reqs):
        if md.version(r.name) not in r.specifier:
            raise LookupError(r)
    import pkg_resources  # noqa: F401  (MMEngine needs it for mmdet:: configs)
    for n in ('wheel', 'ninja'):
        md.version(n)
    import shvit_mm
    assert os.path.realpath(shvit_mm.__file__).startswith(os.path.realpath(root) + os.sep)
    state.append('reqs=ok')
except Exception:
    state.append('reqs=missing')
print(' '.join(state))
PYEOF
) || { echo "Python >= 3.8 is required (python = $PY)" >&2; exit 1; }
echo "    $STATE"

say "pytorch + torchvision"
if [[ $STATE == *torch=ok* ]]; then
  echo "    keeping the installed pair"
else
  # torch asks for setuptools>=77; pin below 82 in the same resolve (pkg_resources is still needed).
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC "setuptools<82"
fi

say "mmcv ${MMCV_VERSION} with compiled ops"
if [[ $STATE == *mmcv=ok* ]]; then
  echo "    mmcv ${MMCV_VERSION} with mmcv._ext already importable"
else
  # MMEngine still imports pkg_resources at run time for `mmdet::` configs: setuptools 82 dropped it.
  "${PIP[@]}" -q "setuptools<82" wheel ninja
  read -r TORCH_VER PYTAG < <("$PY" -c 'import sys, torch; print(torch.__version__.split("+")[0], f"py{sys.version_info[0]}{sys.version_info[1]}")')
  WHEELDIR="$CACHE/wheels/torch-${TORCH_VER}-${PYTAG}"
  mkdir -p "$WHEELDIR"
  WHEEL=$(ls "$WHEELDIR"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    step="mmcv: fetch sdist"
    SRC=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
      -d "$SRC" "mmcv==${MMCV_VERSION}"
    tar -xzf "$SRC"/mmcv-${MMCV_VERSION}.tar.gz -C "$SRC"
    # PyTorch >= 2.14 headers need C++20; MMCV's setup.py hard-codes -std=c++17 (gcc >= 10 accepts c++20).
    sed -i 's/-std=c++17/-std=c++20/g; s/-std=c++14/-std=c++20/g' "$SRC/mmcv-${MMCV_VERSION}/setup.py"
    step="mmcv: compile ops (about 10 minutes on 2 cores)"
    echo "    compiling MMCV ops; this takes about 10 minutes on 2 cores"
    (cd "$SRC/mmcv-${MMCV_VERSION}" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
      "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$WHEELDIR" . )
    WHEEL=$(ls "$WHEELDIR"/mmcv-${MMCV_VERSION}-*.whl | head -n1)
    rm -rf "$SRC"
  fi
  step="mmcv: install wheel"
  "${PIP[@]}" --no-deps --force-reinstall "$WHEEL"
  "${PIP[@]}" -q "mmengine>=0.10.4,<0.11" addict packaging Pillow pyyaml yapf opencv-python-headless
  "$PY" -c "import mmcv, mmcv._ext" || { echo "mmcv built but mmcv._ext does not import" >&2; exit 1; }
fi

say "mmdet 3.3.0, mmpretrain 1.2.0, mmsegmentation 1.2.2, pycocotools, timm and shvit_mm (editable, with test extras)"
if [[ $STATE == *reqs=ok* ]]; then
  echo "    all requirements already satisfied"
else
  "${PIP[@]}" -q "setuptools<82" wheel ninja
  "${PIP[@]}" -q -e "${ROOT}[tests]"
fi

say "mmdeploy 1.3.1 for ONNX export, without its pins (requirements/deploy.txt says why)"
if "$PY" -c "import importlib.metadata as m; assert m.version('mmdeploy') == '1.3.1'; import aenum, multiprocess" 2>/dev/null; then
  echo "    already installed"
else
  "${PIP[@]}" -q --no-deps -r "${ROOT}/requirements/deploy.txt"
fi

say "verify"
"$PY" - <<'PYEOF'
import mmcv, mmcv._ext, mmdet, mmpretrain, mmseg, mmengine, torch, torchvision
import mmseg.apis  # noqa: F401  (needs ftfy and regex)
import shvit_mm  # noqa: F401
print(f"    torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__} (ops), "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, mmseg {mmseg.__version__}")
PYEOF
step="done"
echo "==> done in $(( $(date +%s) - start ))s"
