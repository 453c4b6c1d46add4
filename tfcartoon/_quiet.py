"""Hide TensorFlow's import-time C++ log lines unless the user asked for them.

``TF_CPP_MIN_LOG_LEVEL`` does not reach the lines TensorFlow prints while its shared
libraries load (``Could not find cuda drivers``, ``All log messages before
absl::InitializeLog()``), so the first ``import tensorflow`` runs with the process's
stderr pointed at /dev/null. Exceptions still propagate; only C-level chatter is lost.
Setting ``TF_CPP_MIN_LOG_LEVEL`` yourself (``0`` shows everything) turns this off.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import sys


@contextlib.contextmanager
def stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration (C and Python writers)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, and loads it with stderr silenced."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with stderr_silenced():
                load(module)

        spec.loader.exec_module = exec_module
        return spec


def install():
    """Quiet TensorFlow by default; a user-set ``TF_CPP_MIN_LOG_LEVEL`` wins."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        os.fstat(2)  # a real fd 2 exists (not under every embedding host)
    except OSError:
        return
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
