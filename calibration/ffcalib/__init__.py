"""ffcalib: calibration done on the exported artifact: INT8 quantization and decision thresholds.

    ffcalib int8 --model model.onnx --calib DIR|elpv:mono        (ffcalib.int8.quantize_model)
    ffcalib thresholds --model model.onnx --normal DIR [...]    (ffcalib.thresholds.calibrate_thresholds)

Imports point one way: ffcalib -> ffrt -> ffcore. Metrics, dataset layouts, synthetic
defects, atomic writes and ORT sessions come from the torch-free core (ffcore), the one
definition training uses too; ffcalib never imports fftrain (tests/test_layering.py).
"""
