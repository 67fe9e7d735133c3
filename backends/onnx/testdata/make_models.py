#!/usr/bin/python3
"""Writes the small ONNX models the backends/onnx tests load. The .onnx files are committed; run this
again (with Debian's /usr/bin/python3 and its python3-onnx) only to change them:

    /usr/bin/python3 backends/onnx/testdata/make_models.py

Every model uses opset 17 and a dynamic batch dimension "N", as the sidecar requires.
"""

import hashlib
import os

import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # what onnx 1.12 writes for opset 17; ONNX Runtime 1.30 reads it

# The fingerprint the affine model carries; the Go tests use the same value.
AFFINE_FINGERPRINT = hashlib.sha256(b"novacron test spec: affine").hexdigest()

HERE = os.path.dirname(os.path.abspath(__file__))


def model(graph, props=None, model_version=0):
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="novacron-sidecar-testdata",
        producer_version="1",
    )
    m.ir_version = IR_VERSION
    m.model_version = model_version
    for k, v in (props or {}).items():
        entry = m.metadata_props.add()
        entry.key = k
        entry.value = v
    onnx.checker.check_model(m, full_check=True)
    return m


def save(m, name):
    path = os.path.join(HERE, name)
    onnx.save(m, path)
    print(path)


def affine_graph(batch="N"):
    """y = x*2 + 1 over [N, 3] float32."""
    return helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["twice"]),
            helper.make_node("Add", ["twice", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )


def multi_graph():
    """Several inputs and outputs of the other element types:

    a FP64 [N,2], b INT64 [N,2], c INT32 [N]  ->
    sum FP64 [N,2] = a + b, c2 INT32 [N] = c*2, pos BOOL [N,2] = a > 0, bsq INT64 [N,2] = b*b
    """
    return helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_f64"], to=TensorProto.DOUBLE),
            helper.make_node("Add", ["a", "b_f64"], ["sum"]),
            helper.make_node("Mul", ["c", "two_i32"], ["c2"]),
            helper.make_node("Greater", ["a", "zero_f64"], ["pos"]),
            helper.make_node("Mul", ["b", "b"], ["bsq"]),
        ],
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("c", TensorProto.INT32, ["N"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.DOUBLE, ["N", 2]),
            helper.make_tensor_value_info("c2", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("pos", TensorProto.BOOL, ["N", 2]),
            helper.make_tensor_value_info("bsq", TensorProto.INT64, ["N", 2]),
        ],
        initializer=[
            helper.make_tensor("two_i32", TensorProto.INT32, [], [2]),
            helper.make_tensor("zero_f64", TensorProto.DOUBLE, [], [0.0]),
        ],
    )


def main():
    # The main test model: fingerprint, version and one more custom prop.
    save(
        model(
            affine_graph(),
            {
                "novacron.spec_fingerprint": AFFINE_FINGERPRINT,
                "novacron.model_version": "test-1",
                "novacron.labels": "a,b,c",
            },
        ),
        "affine.onnx",
    )
    # The same graph without any metadata_props, but with an ONNX model_version (the fallback).
    save(model(affine_graph(), model_version=7), "affine_nometa.onnx")
    # A fixed batch dimension: the sidecar refuses it.
    save(model(affine_graph(batch=1)), "affine_fixed_batch.onnx")
    save(model(multi_graph(), {"novacron.model_version": "multi-1"}), "multi.onnx")


if __name__ == "__main__":
    main()
