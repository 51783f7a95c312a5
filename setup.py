import os
import os.path as osp
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
# What OpenMMLab's `mim` looks for in an installed package, as MMDetection ships it: its configs,
# tools and model index under <package>/.mim/.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_requirements(name):
    with open(osp.join(ROOT, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def add_mim_extension():
    """Put MIM_FILES into shvit_mm/.mim: symbolic links for an editable install (`pip install -e .`
    runs `develop` or `editable_wheel`), copies when building a wheel or an sdist, nothing for other
    commands (e.g. pip's metadata step)."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'copy' if os.name == 'nt' else 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'shvit_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim_path, name)
        if not osp.exists(src):  # building from an sdist, which holds .mim already
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src, mim_path), dst)
                continue
            except OSError:
                warnings.warn(f'cannot link {dst} -> {src}; copying it instead')
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


def mim_package_data():
    """Every file under shvit_mm/.mim (links followed), relative to the package."""
    package = osp.join(ROOT, 'shvit_mm')
    return [osp.relpath(osp.join(folder, name), package)
            for folder, _, names in os.walk(osp.join(package, '.mim'), followlinks=True)
            if '__pycache__' not in folder for name in names if not name.endswith('.pyc')]


add_mim_extension()
setup(
    name='shvit_mm',
    version='0.1.0',
    description='SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection / MMPretrain',
    packages=find_packages(include=['shvit_mm', 'shvit_mm.*']),
    package_data={'shvit_mm': mim_package_data()},
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
)
