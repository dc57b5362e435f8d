"""ffcalib: calibration done on the exported artifact: INT8 quantization and decision thresholds.

    ffcalib int8 --model model.onnx --calib DIR|elpv:mono        (ffcalib.int8.quantize_model)
    ffcalib thresholds --model model.onnx --normal DIR [...]    (ffcalib.thresholds.calibrate_thresholds)

Imports point one way (DESIGN.md): ffcalib -> ffrt. Two lazy exceptions, both free of
torch: ``fftrain.metrics`` (numpy-only threshold/AUROC rules, one definition shared with
training) and ``fftrain.data`` for the ``elpv:*`` demo split only.
"""
