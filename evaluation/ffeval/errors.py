"""ffeval's one error type, shared by ffbench's modules."""


class BenchError(RuntimeError):
    """A benchmark cannot run; the message is one line saying why."""
