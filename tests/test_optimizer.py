import keras
import numpy as np
import pytest

from tfcartoon.gan import LinearDecay
from tfcartoon.training.optimizer import ReferenceAdam


def _numpy_adam(w, grads, lr, b1, b2, eps, l2):
    """PyTorch-style Adam with coupled L2, epsilon outside the bias correction as TF."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g + l2 * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def test_reference_adam_is_adam_with_coupled_l2():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(5)]
    var = keras.Variable(start)
    opt = ReferenceAdam(1e-2, beta_1=0.5, beta_2=0.999, l2=0.1)
    opt.build([var])
    for g in grads:
        opt.apply([g], [var])
    expected = _numpy_adam(start.astype("float64"), grads, 1e-2, 0.5, 0.999, 1e-8, 0.1)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_reference_adam_without_l2_matches_keras_adam():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5,)).astype("float32")
    a, b = keras.Variable(start), keras.Variable(start)
    ours = ReferenceAdam(1e-3, beta_1=0.5, epsilon=1e-7)
    theirs = keras.optimizers.Adam(1e-3, beta_1=0.5, epsilon=1e-7)
    ours.build([a])
    theirs.build([b])
    for _ in range(3):
        g = rng.normal(size=(5,)).astype("float32")
        ours.apply([g], [a])
        theirs.apply([g], [b])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_reference_adam_round_trips_its_config():
    opt = ReferenceAdam(LinearDecay(1e-4, 100), l2=1e-4)
    again = ReferenceAdam.from_config(opt.get_config())
    assert again.l2 == 1e-4


@pytest.mark.parametrize("step, expected", [(0, 1.0), (49, 1.0), (50, 1.0), (75, 0.5),
                                            (100, 0.0), (120, 0.0)])
def test_linear_decay_holds_then_falls_to_zero_over_the_second_half(step, expected):
    assert float(LinearDecay(2.0, 100, 0.5)(step)) == pytest.approx(2.0 * expected)
