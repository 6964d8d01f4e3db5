"""Running a job on Ray: the Ray session (local or $RAY_ADDRESS), the labeling actor, the pipeline that wires source, actors, sink and report, and progress output."""
