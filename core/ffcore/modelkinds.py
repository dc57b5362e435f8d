"""The names of the density models an ffrt model can be built on, shared by the trainer's
registry (fftrain.kinds: how each is built, trained and exported) and the metadata schema
(ffrt.meta: which one a file holds), which must agree and cannot import each other.

* ``fastflow``: FastFlow (Yu et al. 2021): per scale a 2D flow of 3x3 (or 3x3/1x1) coupling steps.
* ``cflow``: CFLOW-AD (Gudovskiy et al. 2022): per scale a flow of fully connected (1x1) couplings
  conditioned on a 2D positional encoding.
"""

MODEL_KINDS = ("fastflow", "cflow")
#: What a checkpoint or model file that names no kind holds: everything written before kinds existed.
DEFAULT_MODEL_KIND = "fastflow"
