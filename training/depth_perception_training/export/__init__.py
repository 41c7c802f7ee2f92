"""Export and compile depth models for deployment.

* :mod:`.onnx_export`: checkpoint (this package's folder, or a transformers depth model)
  -> static-shape ONNX with the model metadata inside, checked against torch on real
  or synthetic frames before the file is kept.
* :mod:`.tensorrt_build`: ONNX -> TensorRT engine (FP32/FP16/INT8) through the TensorRT
  Python API, with an engine cache keyed by GPU, TensorRT version, precision, input
  shape and ONNX hash (:func:`~.tensorrt_build.ensure_engine`), FP32 islands for
  LayerNorm/Softmax/attention under FP16, and a check of every engine against
  onnxruntime.
* :mod:`.calibration`: the INT8 calibrator's data side: frames sampled from bags,
  preprocessed exactly as the node does, batched, with a reusable calibration cache.
* :mod:`.torch2trt_export`: optional torch2trt conversion.
* :mod:`.deployable`: a finished run's ``model.onnx`` (and engine) beside its ``model/``.

Importing this package imports no torch, onnx or TensorRT.
"""
