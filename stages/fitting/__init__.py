"""RGB fitting (FFHQ-UV paper section 4.2, pipeline.md section 7): a textured HiFi3D++ head from one photo.

Modules: ``skin`` (Deep3D's YCbCr skin prior), ``preprocess`` (FFHQ-UV's ``step1_process_data.py``: POS
alignment, 224 crop, masks, ``input_data.pt``), ``camera`` (Deep3D's perspective camera), ``render``
(differentiable CPU renderer on the project's rasteriser), ``open_fit`` (the open profile's optimisation),
``outputs`` (FFHQ-UV's per-sample files); the faithful profile: ``face_model`` (the HiFi3D++ 3DMM),
``faithful_models`` (its checkpoints), ``faithful_render`` (FFHQ-UV's rendering of the 3DMM), ``faithful_fit``
(the three-stage optimisation), ``faithful_photo`` (one photo end to end). The pipeline stage is ``stages/fit.py``.
"""
