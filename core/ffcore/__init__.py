"""ffcore: the torch-free bottom of the FastFlow SDK.

Every package (fftrain, ffexport, ffcalib, ffrt, ffeval) may import ffcore; ffcore imports
none of them, and never torch. One definition of each shared thing lives here:

- ``metrics``:   AUROC, pixel AUROC, AUPRO, F1, thresholds, Spearman, score statistics
- ``images``:    image and mask reading, the model's resize (stretch / letterbox)
- ``data``:      dataset layouts (MVTec-AD folder, plain folder, ELPV), splits, batches
- ``synthetic``: synthetic defects drawn on real normal images, exact masks
- ``files``:     file sha256, atomic writes, the image and engine file suffixes
- ``ort``:       the ONNX Runtime session factory and the physical core count
- ``progress``:  progress bars on a terminal, one line per stage elsewhere
- ``trtlimits``: TensorRT limits that decide how the graph is written (TopK's K)
- ``exitcodes``: the model tools' exit statuses; ``versions``: installed package versions

``tests/test_layering.py`` holds the import direction.
"""
