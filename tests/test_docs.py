"""Text that is true: every dotted ``shvit_mm.`` name and every repository path that the package's
docstrings and comments, the README and the docs mention exists."""
import ast
import glob
import importlib
import io
import itertools
import os.path as osp
import re
import tokenize

import pytest

from conftest import REPO_ROOT

NAME = re.compile(r'\bshvit_mm(?:\.[A-Za-z_]\w*)+')
# a path inside the repository: a top-level folder or file of ours, then path characters; braces
# ({a,b}, {1..4}), globs (*) and placeholders (<name>, CONFIG) are expanded or matched loosely
PATH = re.compile(r'(?<![\w./-])(?:(?:shvit_mm|configs|tools|tests|docs|requirements|\.ci)/'
                  r'[\w./{},*<>-]*|(?:README\.md|model-index\.yml|setup\.py|pytest\.ini))')


def _python_text(path: str) -> str:
    """Docstrings and comments of a Python file."""
    with open(path) as f:
        source = f.read()
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return '\n'.join(parts)


def _documents():
    files = sorted(glob.glob(osp.join(REPO_ROOT, 'shvit_mm', '**', '*.py'), recursive=True))
    docs = [osp.join(REPO_ROOT, 'README.md')] + sorted(
        glob.glob(osp.join(REPO_ROOT, 'docs', '**', '*.md'), recursive=True)
        + glob.glob(osp.join(REPO_ROOT, 'configs', '**', 'README.md'), recursive=True))
    for path in files:
        yield osp.relpath(path, REPO_ROOT), _python_text(path)
    for path in docs:
        with open(path) as f:
            yield osp.relpath(path, REPO_ROOT), f.read()


DOCUMENTS = dict(_documents())


def _resolves(name: str) -> bool:
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _expand(pattern: str):
    """Brace sets {a,b} and ranges {1..4}; placeholders (<x>, an upper-case path component such
    as CONFIG) become globs."""
    group = re.search(r'\{([^{}]*)\}', pattern)
    if group is None:
        yield re.sub(r'<[^>]*>|(?<=/)[A-Z][A-Z_]{2,}(?=/|$)', '*', pattern)
        return
    body = group.group(1)
    ends = re.fullmatch(r'(\d+)\.\.(\d+)', body)
    options = [str(i) for i in range(int(ends[1]), int(ends[2]) + 1)] if ends else body.split(',')
    for option in options:
        yield from _expand(pattern[:group.start()] + option + pattern[group.end():])


def _exists(path: str) -> bool:
    path = path.rstrip('.,:;)')
    return all(glob.glob(osp.join(REPO_ROOT, p)) for p in _expand(path))


@pytest.mark.parametrize('doc', sorted(DOCUMENTS))
def test_mentioned_names_and_paths_exist(doc):
    text = DOCUMENTS[doc]
    names = sorted({n.rstrip('.') for n in NAME.findall(text)})
    bad_names = [n for n in names if not _resolves(n)]
    paths = sorted(set(PATH.findall(text)))
    bad_paths = [p for p in paths if not _exists(p)]
    assert not bad_names and not bad_paths, (
        f'{doc} mentions what does not exist: names {bad_names}, paths {bad_paths}')


def test_the_checker_finds_what_is_missing():
    assert _resolves('shvit_mm.inference.enable_fast_inference')
    assert not _resolves('shvit_mm.deploy.optimize_for_inference')
    assert _exists('configs/{retinanet,mask_rcnn}/shvit_s{1..4}.py')
    assert not _exists('configs/_base_/safe_runtime.py')
    assert _exists('work_dirs/x') is False and _exists('configs/<family>/README.md')
    assert list(itertools.islice(_expand('a/{b,c}/<x>.py'), 3)) == ['a/b/*.py', 'a/c/*.py']
