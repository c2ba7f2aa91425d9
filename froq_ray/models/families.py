"""Import every model family so that each registers itself."""

from . import dlib_resnet, mobilefacenet, iresnet, adaface, onnx_model  # noqa: F401
