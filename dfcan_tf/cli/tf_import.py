"""TensorFlow's import under the ``dfcan`` command: its log level applies from the first line.

``import tensorflow`` loads several shared libraries, and each writes, through
absl logging before TensorFlow has set it up, ``WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR`` and an INFO line
``oneDNN custom operations are on ...``: the same banner twice per process,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says, because it only takes effect later.

:func:`install` adds an import hook that runs TensorFlow's own import with
file descriptor 2 redirected to a temporary file, then writes back every line
except the absl lines below ``TF_CPP_MIN_LOG_LEVEL`` (0: all kept; 1: INFO
dropped; 2: also WARNING; 3: also ERROR) and, from level 1, absl's
pre-initialisation notice. Nothing else is dropped: Python warnings, tracebacks
and any other output of the import are written back unchanged. The hook acts
once, on the first ``import tensorflow`` of the process (a command that never
imports TensorFlow never triggers it), and then removes itself.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's line prefix: severity letter, MMDD hh:mm:ss.micro (before absl is set up: 00:00:<epoch seconds>), thread
# id, file:line]
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+ [^\]\s]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def keep_line(line: str, level: int) -> bool:
    """Whether a line written during TensorFlow's import is shown at ``TF_CPP_MIN_LOG_LEVEL`` ``level``."""
    if level >= 1 and line.rstrip("\r\n") == ABSL_NOTICE:
        return False
    m = _ABSL_LINE.match(line)
    return m is None or _SEVERITY[m.group(1)] >= level


@contextmanager
def filtered_stderr(level: int) -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file; on exit write back the lines :func:`keep_line` keeps."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if keep_line(line, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _Loader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` inside :func:`filtered_stderr`."""

    def __init__(self, loader: importlib.abc.Loader, finder: _Finder):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # TensorFlow sees its own loader; the hook is done after this one import.
        module.__loader__ = module.__spec__.loader = self.loader
        self.finder.remove()
        with filtered_stderr(min_log_level()):
            self.loader.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and wraps its loader in :class:`_Loader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, self)
                return spec
        return None

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Add the hook, unless TensorFlow is imported already or the hook is in place."""
    if "tensorflow" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
