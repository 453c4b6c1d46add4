"""The export scripts' command-line options, kept free of heavy imports.

``python export/to_tflite.py --help`` (or a bad option) is answered from here before
TensorFlow, tf2onnx or ONNX Runtime load, in a fraction of a second.
"""

import argparse

TFLITE_PRECISIONS = ("fp32", "fp16", "int8", "full_int8")
ONNX_PRECISIONS = ("fp32", "int8")
MIN_OPSET, MAX_OPSET = 13, 18

_MODEL_HELP = ("generator: a .keras file, a training run directory or preset:NAME "
               "(default: the shipped young_women preset)")
_GROUP_HELP = "group to export, or 'all' for one file per group (default: all)"


def batch_size(text):
    """``--batch``: a positive int, or 'any' (None)."""
    if text == "any":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'any', got {text!r}")
    return int(text)


def tflite_parser():
    parser = argparse.ArgumentParser(
        prog="python export/to_tflite.py",
        description="Export photo->cartoon group paths of a tfcartoon generator to TFLite. "
                    "Each file is checked against the Keras model first (on real photos from "
                    "the shared data when present, else on synthetic images; the output and "
                    "model card say which) and is not written if it disagrees.")
    parser.add_argument("--model", default=None, help=_MODEL_HELP)
    parser.add_argument("--group", default=None, help=_GROUP_HELP)
    parser.add_argument("--precision", choices=TFLITE_PRECISIONS, default="fp32",
                        help="fp32, fp16 (weights), int8 (dynamic-range weights) or "
                             "full_int8 (activations too, calibrated on the parity photos)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--app", action="store_true",
                        help="app-ready variant: uint8 RGB in and out, scaling in the model")
    parser.add_argument("--multigroup", action="store_true",
                        help="one file with every group (shared trunk stored once), "
                             "selected by an int32 'group' input (not with --group)")
    _auto_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def _auto_options(parser):
    parser.add_argument("--auto", action="store_true",
                        help="one file with every group and the group classifier: its only "
                             "input is the image, each face is routed to its group's branch "
                             "(outputs: cartoon, group_probabilities; not with --group)")
    parser.add_argument("--classifier", default=None,
                        help="with --auto: the group classifier (.keras; default: the run "
                             "directory's group_classifier.keras)")


def onnx_parser():
    parser = argparse.ArgumentParser(
        prog="python export/to_onnx.py",
        description="Export photo->cartoon group paths of a tfcartoon generator to ONNX "
                    "(float32, or int8 convolutions). Each file is checked against the "
                    "Keras model with ONNX Runtime first (on real photos from the shared data "
                    "when present, else on synthetic images; the output and model card say "
                    "which) and is not written if it disagrees.")
    parser.add_argument("--model", default=None, help=_MODEL_HELP)
    parser.add_argument("--group", default=None, help=_GROUP_HELP)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=17,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: 17)")
    parser.add_argument("--precision", choices=ONNX_PRECISIONS, default="fp32",
                        help="fp32, or int8: static int8 convolutions and dense layers "
                             "calibrated on the parity photos, written as <group>_int8.onnx "
                             "(default: fp32)")
    parser.add_argument("--batch", type=batch_size, default=1,
                        help="batch size fixed in the file, or 'any' for a free batch "
                             "dimension (default: 1, which runs ~7%% faster in ONNX Runtime)")
    parser.add_argument("--quick", action="store_true",
                        help="skip tf2onnx's transpose optimiser: converts in well under a "
                             "minute instead of 1-2, but runs ~20%% slower in ONNX Runtime")
    _auto_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser
