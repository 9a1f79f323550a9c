"""The numbers the seed documents print, reproduced by glassnet."""

import numpy as np

from glassnet.explain import SEED_W, SEED_X, worked_example
from glassnet.functional import cross_entropy, cross_entropy_backward, softmax


def step(ex, title):
    return next(s.value for s in ex.steps if s.title == title)


def test_seed_000_worked_example():
    ex = worked_example()
    np.testing.assert_allclose(step(ex, "Logits"), [-0.8, 1.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(step(ex, "Shift by the max"), [-1.9, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(step(ex, "Exponentials"), [0.149, 1.0, 0.368], atol=1e-3)
    np.testing.assert_allclose(step(ex, "Their sum"), 1.517, atol=1e-3)
    np.testing.assert_allclose(step(ex, "Softmax"), [0.098, 0.659, 0.242], atol=1e-3)
    np.testing.assert_allclose(step(ex, "Cross-entropy loss"), 0.417, atol=1e-3)
    grad = step(ex, "Fused gradient")
    np.testing.assert_allclose(grad, [0.098, -0.341, 0.242], atol=1e-3)
    np.testing.assert_allclose(step(ex, "Jacobian route, result"), grad, atol=1e-15)
    np.testing.assert_allclose(
        step(ex, "Weight gradient"), [[0.098, -0.341, 0.242], [0.196, -0.682, 0.484]], atol=2e-3
    )
    np.testing.assert_allclose(
        step(ex, "SGD update"), [[-0.0098, 0.0341, -0.0242], [-0.0196, 0.0682, -0.0484]], atol=2e-4
    )
    assert step(ex, "After the step") < step(ex, "Cross-entropy loss")  # the update helps
    np.testing.assert_allclose(SEED_X @ SEED_W, [-0.8, 1.1, 0.1], atol=1e-12)


def test_seed_001_gradient_from_given_probabilities():
    # p = [0.2, 0.7, 0.1], class 1: dL/dz = p - y = [0.2, -0.3, 0.1], then / N
    logits = np.log(np.array([[0.2, 0.7, 0.1]]))
    np.testing.assert_allclose(cross_entropy_backward(logits, np.array([1])), [[0.2, -0.3, 0.1]])
    two = np.repeat(logits, 2, axis=0)
    np.testing.assert_allclose(cross_entropy_backward(two, np.array([1, 1]))[0], [0.1, -0.15, 0.05])


def test_seed_002_visual_examples():
    np.testing.assert_allclose(softmax(np.array([2.0, 1.0, 0.1])), [0.66, 0.24, 0.10], atol=5e-3)
    grad = cross_entropy_backward(np.array([[2.0, 1.0, 0.1]]), np.array([2]))
    np.testing.assert_allclose(grad, [[0.66, 0.24, -0.90]], atol=5e-3)
    converged = np.array([[0.1, 0.2, 5.0]])
    np.testing.assert_allclose(softmax(converged), [[0.01, 0.01, 0.98]], atol=5e-3)
    np.testing.assert_allclose(
        cross_entropy_backward(converged, np.array([2])), [[0.01, 0.01, -0.02]], atol=5e-3
    )
    # a one-hot float target gives the same as the class index
    np.testing.assert_allclose(
        cross_entropy(converged, np.array([[0.0, 0.0, 1.0]])),
        cross_entropy(converged, np.array([2])),
    )
