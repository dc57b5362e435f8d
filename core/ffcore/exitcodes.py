"""Exit statuses of the model tools (ffexport, its engine and BF16 steps, ffcalib): one set, so a script
reads the same code for the same outcome from either."""

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2  # the requested feature cannot run here / is not in this release
EXIT_GATE = 3  # an accuracy gate refused the files (as `ffcalib int8`)
EXIT_INTERRUPTED = 130
