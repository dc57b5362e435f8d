"""``ffrt run``: frames from folders, videos, cameras and streams through one Detector's
batching path, one result line per frame. sources (what a source is and how it is read),
runner (the loop: one thread per source, all into Detector.submit), writer (results.jsonl,
CSV, overlays, summary), metrics (Prometheus), command (the command line around it)."""
