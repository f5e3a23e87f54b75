"""The float32 training layers against TensorFlow's automatic differentiation: forward values, input and
parameter gradients of every layer on random shapes and options, the loss, and a few SGD steps with
momentum of a whole small network against tf.keras.optimizers.SGD.

Tolerance: 1e-5 relative, plus 1e-6 of the largest magnitude of the compared array (sums of hundreds of
float32 products differ in their last bits with the order of summation)."""

import numpy as np
import pytest

import microforge  # noqa: F401  (before TensorFlow)
from microforge.errors import InputError, UnsupportedError
from microforge.learn import layers as L

tf = pytest.importorskip("tensorflow")


def close(actual, desired):
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(desired).max())))


def rand(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def tf_activation(z, activation):
    return {"NONE": lambda v: v, "RELU": tf.nn.relu, "RELU6": tf.nn.relu6}[activation](z)


def check_against_tape(layer, x, tf_forward, variables):
    """Forward and all gradients of `layer` on x against tf_forward(x_tensor, *variables) under a tape,
    loss = sum(output * a random cotangent)."""
    rng = np.random.default_rng(1)
    y = layer.forward(x)
    cotangent = rand(rng, *y.shape)
    dx = layer.backward(cotangent)
    x_t = tf.Variable(x)
    tf_vars = [tf.Variable(v) for v in variables]
    with tf.GradientTape() as tape:
        out = tf_forward(x_t, *tf_vars)
        loss = tf.reduce_sum(out * cotangent)
    grads = tape.gradient(loss, [x_t] + tf_vars)
    close(y, out.numpy())
    close(dx, grads[0].numpy())
    return [g.numpy() for g in grads[1:]]


CONVS = [((1, 7, 6, 3), (4, 3, 3), (1, 1), "SAME", "RELU"),
         ((2, 8, 8, 2), (5, 3, 2), (2, 2), "SAME", "RELU6"),
         ((2, 9, 7, 3), (2, 3, 3), (2, 1), "VALID", "NONE"),
         ((1, 5, 5, 4), (3, 1, 1), (1, 1), "VALID", "RELU")]


@pytest.mark.parametrize("shape,kernel,stride,padding,activation", CONVS)
def test_conv2d(shape, kernel, stride, padding, activation):
    rng = np.random.default_rng(0)
    o, kh, kw = kernel
    w, b, x = rand(rng, o, kh, kw, shape[3]), rand(rng, o), rand(rng, *shape)
    layer = L.Conv2D(w, b, stride=stride, padding=padding, activation=activation)

    def forward(x_t, w_t, b_t):  # TFLite's (O, KH, KW, I) is TF's (KH, KW, I, O)
        z = tf.nn.conv2d(x_t, tf.transpose(w_t, (1, 2, 3, 0)), (1,) + stride + (1,), padding) + b_t
        return tf_activation(z, activation)

    dw, db = check_against_tape(layer, x, forward, [w, b])
    close(layer.grads["weights"], dw)
    close(layer.grads["bias"], db)


DEPTHWISE = [((1, 6, 6, 3), (3, 3), 1, (1, 1), "SAME", "RELU"),
             ((2, 7, 8, 2), (3, 3), 2, (2, 2), "SAME", "RELU6"),
             ((2, 9, 5, 2), (5, 3), 2, (2, 1), "VALID", "NONE")]


@pytest.mark.parametrize("shape,kernel,multiplier,stride,padding,activation", DEPTHWISE)
def test_depthwise_conv2d(shape, kernel, multiplier, stride, padding, activation):
    rng = np.random.default_rng(0)
    c = shape[3]
    w, b, x = rand(rng, 1, kernel[0], kernel[1], c * multiplier), rand(rng, c * multiplier), rand(rng, *shape)
    layer = L.DepthwiseConv2D(w, b, depth_multiplier=multiplier, stride=stride, padding=padding,
                              activation=activation)

    def forward(x_t, w_t, b_t):  # TFLite's (1, KH, KW, I * M) is TF's (KH, KW, I, M)
        kernel_t = tf.reshape(w_t, (kernel[0], kernel[1], c, multiplier))
        z = tf.nn.depthwise_conv2d(x_t, kernel_t, (1,) + stride + (1,), padding) + b_t
        return tf_activation(z, activation)

    dw, db = check_against_tape(layer, x, forward, [w, b])
    close(layer.grads["weights"], dw)
    close(layer.grads["bias"], db)


@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6"])
def test_dense_flattens_its_input(activation):
    rng = np.random.default_rng(0)
    w, b, x = rand(rng, 5, 12), rand(rng, 5), 3 * rand(rng, 4, 2, 2, 3)
    layer = L.Dense(w, b, activation=activation)
    dw, db = check_against_tape(layer, x, lambda x_t, w_t, b_t: tf_activation(
        tf.matmul(tf.reshape(x_t, (4, 12)), w_t, transpose_b=True) + b_t, activation), [w, b])
    close(layer.grads["weights"], dw)
    close(layer.grads["bias"], db)


@pytest.mark.parametrize("shape,window,stride,padding", [((2, 6, 6, 3), (2, 2), (2, 2), "VALID"),
                                                         ((1, 7, 5, 2), (3, 3), (2, 2), "SAME"),
                                                         ((2, 25, 5, 4), (25, 5), (1, 1), "VALID")])
def test_average_pool(shape, window, stride, padding):
    x = rand(np.random.default_rng(0), *shape)
    layer = L.AveragePool2D(filter=window, stride=stride, padding=padding)
    # TF's SAME average pooling also divides by the valid elements only, as TFLite's
    check_against_tape(layer, x, lambda x_t: tf.nn.avg_pool2d(x_t, window, stride, padding), [])
    assert layer.grads == {}


def test_reshape_passes_gradients_back_in_the_input_shape():
    x = rand(np.random.default_rng(0), 3, 1, 1, 8)
    layer = L.Reshape((8,))
    assert layer.forward(x).shape == (3, 8)
    assert layer.backward(np.ones((3, 8), np.float32)).shape == (3, 1, 1, 8)


def test_relu6_boundaries_follow_tensorflow():
    z = np.array([[-1.0, 0.0, 3.0, 6.0, 7.0]], np.float32)
    layer = L.Dense(np.eye(5, dtype=np.float32), np.zeros(5, np.float32), activation="RELU6")
    layer.forward(z)
    got = layer.backward(np.ones((1, 5), np.float32))
    z_t = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.relu6(z_t))
    np.testing.assert_array_equal(got, tape.gradient(loss, z_t).numpy())


def test_softmax_cross_entropy_matches_tensorflow_even_for_huge_logits():
    rng = np.random.default_rng(0)
    logits = rand(rng, 6, 4) * 5
    logits[0] = [1e4, -1e4, 0, 3e4]
    labels = np.array([1, 0, 3, 2, 2, 1])
    loss, grad = L.softmax_cross_entropy(logits, labels)
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        want = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    close(loss, want.numpy())
    close(grad, tape.gradient(want, z).numpy())


def test_a_network_trained_by_sgd_with_momentum_matches_keras():
    """Conv2D -> DepthwiseConv2D -> AveragePool2D -> Reshape -> Dense, five steps of SGD(0.05, momentum 0.9):
    the same weights and losses as tf.keras.optimizers.SGD under a GradientTape."""
    rng = np.random.default_rng(0)
    conv_w, conv_b = 0.3 * rand(rng, 4, 3, 3, 2), 0.1 * rand(rng, 4)
    dw_w, dw_b = 0.3 * rand(rng, 1, 3, 3, 8), 0.1 * rand(rng, 8)
    fc_w, fc_b = 0.3 * rand(rng, 3, 8), 0.1 * rand(rng, 3)
    model = L.Sequential([L.Conv2D(conv_w, conv_b, stride=(2, 2), activation="RELU"),
                          L.DepthwiseConv2D(dw_w, dw_b, depth_multiplier=2, activation="RELU6"),
                          L.AveragePool2D(filter=(4, 4), stride=(4, 4)), L.Reshape((8,)), L.Dense(fc_w, fc_b)])
    optimizer = L.SGD(0.05, momentum=0.9)
    variables = [tf.Variable(v) for v in (conv_w, conv_b, dw_w, dw_b, fc_w, fc_b)]
    keras_sgd = tf.keras.optimizers.SGD(0.05, momentum=0.9)

    def tf_model(x):
        cw, cb, dw, db, fw, fb = variables
        h = tf.nn.relu(tf.nn.conv2d(x, tf.transpose(cw, (1, 2, 3, 0)), (1, 2, 2, 1), "SAME") + cb)
        h = tf.nn.relu6(tf.nn.depthwise_conv2d(h, tf.reshape(dw, (3, 3, 4, 2)), (1, 1, 1, 1), "SAME") + db)
        h = tf.reshape(tf.nn.avg_pool2d(h, 4, 4, "VALID"), (-1, 8))
        return tf.matmul(h, fw, transpose_b=True) + fb

    for step in range(5):
        x, y = rand(rng, 6, 8, 8, 2), rng.integers(0, 3, 6)
        loss, grad = L.softmax_cross_entropy(model.forward(x), y)
        model.backward(grad)
        optimizer.step(model)
        with tf.GradientTape() as tape:
            want = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf_model(x)))
        keras_sgd.apply_gradients(zip(tape.gradient(want, variables), variables))
        close(loss, want.numpy())
    for (_, _, ours), theirs in zip(model.params(), variables):
        close(ours, theirs.numpy())


def test_macs_on_a_hand_counted_case():
    conv = L.Conv2D(np.zeros((4, 3, 3, 2), np.float32), np.zeros(4, np.float32), stride=(2, 2), padding="SAME")
    assert conv.output_shape((8, 8, 2)) == (4, 4, 4)
    assert conv.macs((8, 8, 2)) == {"forward": 4 * 4 * 4 * 18, "weight_grad": 1152, "input_grad": 1152}
    dw = L.DepthwiseConv2D(np.zeros((1, 3, 3, 6), np.float32), np.zeros(6, np.float32), depth_multiplier=2)
    assert dw.macs((5, 5, 3))["forward"] == 5 * 5 * 6 * 9
    assert L.Dense(np.zeros((3, 7), np.float32), np.zeros(3, np.float32)).macs((7,))["weight_grad"] == 21


def test_bad_layers_and_inputs_are_refused():
    w, b = np.zeros((4, 3, 3, 2), np.float32), np.zeros(4, np.float32)
    with pytest.raises(InputError, match="Conv2D: weights \\[4, 3, 3, 2\\] and bias \\[3\\]"):
        L.Conv2D(w, np.zeros(3))
    with pytest.raises(InputError, match="padding 'FULL'"):
        L.Conv2D(w, b, padding="FULL")
    with pytest.raises(InputError, match="activation 'TANH'"):
        L.Conv2D(w, b, activation="TANH")
    with pytest.raises(UnsupportedError, match="dilated"):
        L.Conv2D(w, b, dilation=2)
    with pytest.raises(InputError, match="NaN or infinity"):
        L.Dense(np.full((2, 2), np.nan), np.zeros(2))
    with pytest.raises(InputError, match="does not fit weights"):
        L.Conv2D(w, b).forward(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(InputError, match="has 6 values per sample"):
        L.Dense(np.zeros((2, 4), np.float32), np.zeros(2)).forward(np.zeros((1, 6), np.float32))
    with pytest.raises(InputError, match="labels must be class indices 0..2"):
        L.softmax_cross_entropy(np.zeros((2, 3), np.float32), [0, 3])
    with pytest.raises(InputError, match="does not fit a 2x2 input"):
        L.AveragePool2D(filter=(3, 3), stride=(1, 1)).forward(np.zeros((1, 2, 2, 1), np.float32))
