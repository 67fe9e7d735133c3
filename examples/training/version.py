"""Model versions that change with the weights.

A model's novacron.model_version is "<kind>-<arch>-<release>+<spec fingerprint[:8]>.w<graph[:8]>":
the last part is the SHA-256 of the model's graph (its weights and structure, serialized
deterministically, without metadata_props or doc strings), so a retrained model gets a new version
even when its spec and release are the same. train.py stamps every model it exports; run this file
on existing models to stamp them again (idempotent: the weights part is replaced, never appended
twice):

    /usr/bin/python3 examples/training/version.py examples/models/*.onnx

Needs only the onnx package (Debian's python3-onnx).
"""
import hashlib
import re
import sys

import onnx

VERSION_KEY = "novacron.model_version"
_WEIGHTS = re.compile(r"\.w[0-9a-f]{8}$")


def graph_digest(m):
    """SHA-256 hex of the model's graph (weights and structure), metadata left out."""
    return hashlib.sha256(m.graph.SerializeToString(deterministic=True)).hexdigest()


def stamp(m):
    """Sets the weights part of m's novacron.model_version (and its doc string's copy); returns the
    new version."""
    props = {p.key: p for p in m.metadata_props}
    if VERSION_KEY not in props:
        raise SystemExit("model has no metadata_props %s to stamp" % VERSION_KEY)
    old = props[VERSION_KEY].value
    base = _WEIGHTS.sub("", old)
    new = "%s%sw%s" % (base, "." if "+" in base else "+", graph_digest(m)[:8])
    props[VERSION_KEY].value = new
    if m.doc_string.startswith(old):
        m.doc_string = new + m.doc_string[len(old):]
    return new


def main(paths):
    if not paths:
        raise SystemExit(__doc__)
    for path in paths:
        m = onnx.load(path)
        old = {p.key: p.value for p in m.metadata_props}.get(VERSION_KEY)
        new = stamp(m)
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, path)
        print("%s: %s -> %s" % (path, old, new))


if __name__ == "__main__":
    main(sys.argv[1:])
