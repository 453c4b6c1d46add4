"""Where the project's shared, never-committed data lives.

The real images and the face-recognition model are read from a ``shared`` folder
beside the repository (``<repo>/../shared``), or from ``$TFCARTOON_SHARED`` when set.
Nothing in it is ever copied into the repository.
"""

import os
from pathlib import Path

ENV_VAR = "TFCARTOON_SHARED"


def shared_dir():
    """Return the shared data folder as a Path, or None when it is absent."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
    else:
        path = Path(__file__).resolve().parent.parent.parent / "shared"
    return path if path.is_dir() else None


def shared_path(*parts):
    """Return ``shared_dir()/parts`` if it exists, else None."""
    root = shared_dir()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None
