"""Face-ID embedder: a TFLite face-recognition model rebuilt as a frozen Keras model.

The face-ID loss and the identity metric need a face-recognition network that
TensorFlow can differentiate through. The project's embedder ships as a float32
TFLite file (``squeezenet_fp32.tflite``: input ``[1, 112, 112, 3]`` RGB scaled
``(x - 127.5) / 128`` and aligned to the ArcFace 5-point template, output a 128-d
embedding). :func:`tflite_to_keras` reads the graph and its weights from the
flatbuffer (with the schema bundled in TensorFlow, so no extra dependency) and
rebuilds it op by op out of standard Keras layers
(:mod:`tfcartoon.models.tflite_to_keras`), with the weights copied exactly, every
layer frozen and computing in float32 whatever the global dtype policy.

:func:`face_embedding` maps generator images (``[-1, 1]``, aligned 256x256 crops
in the project's framing) to the embedder's input with a fixed, differentiable
crop and resize (see :data:`FACE_CROP_BOX` for how the box was chosen) and
returns the raw, *not* L2-normalised, embedding.

Command line: ``python -m tfcartoon.models.face_id IN.tflite OUT.keras [--overwrite]``.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import keras

from tfcartoon.models.tflite_to_keras import tflite_to_keras
from tfcartoon.paths import shared_path

#: Where the default embedder lives inside the shared data folder.
DEFAULT_EMBEDDER = ("models", "face_id", "squeezenet_fp32.tflite")

#: Side of the aligned generator images the crop box is defined at.
REFERENCE_SIZE = 256

#: Face crop ``(top, left, side)`` in pixels of a 256x256 aligned image (rows and
#: columns 32:223). Fitted (least squares, scale + translation) so that the mean
#: MTCNN landmarks of the aligned p2c photos land on the ArcFace 112x112 template
#: once the box is resized to 112: mean landmark error 2.3 px at 112 (3.3 px per
#: image) against 6.4 px (7.0 px) for the SPEC's crop (rows 57:219, cols 47:209),
#: which sits too low and too tight for this embedder. On the lotr photos aligned
#: by ``tfcartoon.data.faces``, embeddings through this box have cosine 0.91 with
#: those of a direct 5-point template warp (SPEC box: 0.59).
FACE_CROP_BOX = (32, 32, 191)

def _check_embedder(model, source):
    """Raise unless ``model`` maps (B, S, S, 3) images to (B, D) embeddings."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{source}: expected one input and one output, got {len(model.inputs)} and "
            f"{len(model.outputs)}"
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"{source}: expected an input of shape (batch, S, S, 3), got {shape}")
    if len(model.output_shape) != 2:
        raise ValueError(
            f"{source}: expected an output of shape (batch, D), got {model.output_shape}"
        )


def load_face_embedder(path):
    """Load the face-ID embedder from a ``.tflite`` file or a converted ``.keras`` file.

    Returns a frozen float32 Keras model with the file's contract: input
    ``(batch, 112, 112, 3)`` float32 RGB aligned to the ArcFace template and scaled
    ``(x - 127.5) / 128``; output the raw ``(batch, 128)`` embedding, *not*
    L2-normalised (normalise before taking cosines). Use :func:`face_embedding`
    to feed it ``[-1, 1]`` generator images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face embedder not found: {path}")
    if path.suffix == ".tflite":
        model = tflite_to_keras(path)
    elif path.suffix == ".keras":
        model = keras.saving.load_model(path, compile=False)
    else:
        raise ValueError(f"face embedder must be a .tflite or .keras file, got {path}")
    _check_embedder(model, path)
    model.trainable = False
    return model


def default_embedder_path():
    """Path of the shared default embedder; raise FileNotFoundError when absent."""
    path = shared_path(*DEFAULT_EMBEDDER)
    if path is None:
        raise FileNotFoundError(
            f"default face embedder {'/'.join(DEFAULT_EMBEDDER)!r} not found in the shared "
            "data folder; pass an embedder (see tfcartoon.models.face_id.load_face_embedder)"
        )
    return path


def convert_face_embedder(tflite_path, out_keras_path, overwrite=False):
    """Convert a TFLite embedder to a ``.keras`` file; return the written Path.

    The model is saved into a temporary folder beside the destination, then moved
    into place with ``os.replace``, so readers never see a partial file. An
    existing destination is an error unless ``overwrite=True``.
    """
    out = Path(out_keras_path)
    if out.suffix != ".keras":
        raise ValueError(f"output must end in .keras, got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    model = load_face_embedder(tflite_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A private folder beside the output: same filesystem (so os.replace is atomic)
    # and the saved file gets the usual umask permissions, unlike mkstemp's 0600.
    temp_dir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        temp = os.path.join(temp_dir, out.name)
        model.save(temp)
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return out


def face_crop_box(size):
    """``(top, left, side)`` of the face crop in a ``size`` x ``size`` aligned image.

    :data:`FACE_CROP_BOX` scaled from 256 and rounded to whole pixels.
    """
    scale = size / REFERENCE_SIZE
    return tuple(int(round(v * scale)) for v in FACE_CROP_BOX)


def embedder_input(images, input_size=112):
    """Map ``[-1, 1]`` aligned images (B, S, S, 3) to the embedder's input.

    A fixed crop (:func:`face_crop_box`), a bilinear resize to ``input_size``
    and the rescale ``x_pix = (x + 1) * 127.5``, ``(x_pix - 127.5) / 128``.
    Differentiable and XLA-compatible (antialiased resizing is not, and did not
    change the identity scores measurably); computed in float32.
    """
    if len(images.shape) != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(
            f"images: expected shape (batch, S, S, 3) with square S, got {tuple(images.shape)}"
        )
    top, left, side = face_crop_box(images.shape[1])
    crop = keras.ops.cast(images, "float32")[:, top : top + side, left : left + side, :]
    crop = keras.ops.image.resize(crop, (input_size, input_size), interpolation="bilinear")
    pixels = (crop + 1.0) * 127.5
    return (pixels - 127.5) / 128.0


def face_embedding(embedder, images):
    """Raw (not L2-normalised) embeddings of ``[-1, 1]`` aligned images (B, S, S, 3).

    Differentiable with respect to ``images``; the embedder stays frozen.
    """
    return embedder(embedder_input(images, embedder.input_shape[1]), training=False)


def main(argv=None):
    """Command line: convert a TFLite embedder to a ``.keras`` file."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.models.face_id",
        description="Convert a float32 TFLite face embedder to a frozen .keras model.",
    )
    parser.add_argument("tflite", help="input .tflite file")
    parser.add_argument("output", help="output .keras file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        out = convert_face_embedder(args.tflite, args.output, overwrite=args.overwrite)
    except (OSError, ValueError, NotImplementedError) as error:
        parser.error(str(error))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
