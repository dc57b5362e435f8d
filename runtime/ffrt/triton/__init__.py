"""ffrt on NVIDIA Triton Inference Server.

    protocol      the wire contract of ffrt_detector (tensor names and types, Result <-> tensors)
    repository    write a model repository (ffrt triton-repo, ffexport --triton)
    python_model  ffrt_detector's code on Triton's Python backend (BLS to ffrt_model)
    serve         ffrt serve: a real Triton here through PyTriton (the serve extra)
    cli           the two subcommands

The client side is ffrt.client.RemoteDetector. Nothing here imports tritonclient or PyTriton
at module level: the runtime works without them.
"""
