"""RGB fitting (FFHQ-UV paper section 4.2, pipeline.md section 7): a textured HiFi3D++ head from one photo.

Modules: ``skin`` (Deep3D's YCbCr skin prior), ``preprocess`` (FFHQ-UV's ``step1_process_data.py``: POS
alignment, 224 crop, masks, ``input_data.pt``), ``camera`` (Deep3D's perspective camera), ``render``
(differentiable CPU renderer on the project's rasteriser), ``open_fit`` (the open profile's optimisation),
``outputs`` (FFHQ-UV's per-sample files). The pipeline stage is ``stages/fit.py``.
"""
