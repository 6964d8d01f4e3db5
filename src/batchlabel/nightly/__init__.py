"""Nightly incremental re-labeling: date partitions, staging of the delta, drift against the previous night, the night itself, and its schedule (crontab / RayCronJob)."""
