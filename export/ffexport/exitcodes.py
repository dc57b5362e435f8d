"""ffexport's exit statuses, shared by the CLI and the steps it runs (TensorRT, BF16 re-fit)."""

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2  # the requested feature cannot run here / is not in this release
EXIT_GATE = 3  # an accuracy gate refused the files (as `ffcalib int8`)
EXIT_INTERRUPTED = 130
