"""Evaluation metrics."""

import functools

import numpy as np

from tfcartoon.models import face_id


@functools.lru_cache(maxsize=1)
def _default_embedder():
    """The shared face embedder, converted once per process."""
    return face_id.load_face_embedder(face_id.default_embedder_path())


def _check_images(name, images):
    """``images`` as float32 (N, S, S, 3) in [-1, 1]; raise naming ``name`` otherwise."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] != array.shape[2] or array.shape[3] != 3:
        raise ValueError(
            f"{name}: expected aligned crops of shape (N, S, S, 3) with square S, got "
            f"{array.shape}"
        )
    if array.size and (array.min() < -1.001 or array.max() > 1.001):
        raise ValueError(
            f"{name}: expected values in [-1, 1], got [{array.min():.3g}, {array.max():.3g}]"
        )
    return array


def _unit_embeddings(embedder, images, batch_size):
    """L2-normalised face embeddings of ``images``, computed in batches."""
    chunks = [
        np.asarray(face_id.face_embedding(embedder, images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    embeddings = np.concatenate(chunks)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def identity_similarity(photos, cartoons, embedder=None, batch_size=32):
    """Cosine similarity of face-ID embeddings, photo i vs cartoon i.

    Args:
        photos, cartoons: float arrays (N, S, S, 3) of aligned crops in [-1, 1]
            (the two may differ in S; see ``face_id.face_embedding`` for the crop).
        embedder: a model from ``face_id.load_face_embedder``; default the shared
            ``models/face_id/squeezenet_fp32.tflite``.
        batch_size: images per embedder call.

    Returns:
        float32 numpy array (N,) of cosines in [-1, 1].
    """
    photos = _check_images("photos", photos)
    cartoons = _check_images("cartoons", cartoons)
    if len(photos) != len(cartoons):
        raise ValueError(
            f"photos and cartoons must pair up: got {len(photos)} photos and "
            f"{len(cartoons)} cartoons"
        )
    if len(photos) == 0:
        return np.zeros((0,), np.float32)
    embedder = _default_embedder() if embedder is None else embedder
    similarity = np.sum(
        _unit_embeddings(embedder, photos, batch_size)
        * _unit_embeddings(embedder, cartoons, batch_size),
        axis=1,
    )
    return similarity.astype(np.float32)
