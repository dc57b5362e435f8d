"""ffcalib: calibration done on the exported artifact: INT8 quantization and decision thresholds."""
