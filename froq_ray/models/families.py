"""Import every model family so that each registers itself."""

from . import adaface, dlib_resnet, iresnet, mobilefacenet, onnx_model  # noqa: F401 - imported to register the families
