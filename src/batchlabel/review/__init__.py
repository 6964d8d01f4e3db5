"""Human review of a labeled output: send the uncertain rows to people, read their labels back as gold.

    labeled output ──export.py──► Label Studio tasks (JSON, with predictions) or a CSV sheet
        (rows with confidence < T, plus a seeded audit sample of confident rows)
    reviewed file ──ingest.py──► gold Parquet (id, text, gold): input for `eval` / `run` metrics,
        `train.input` and a nightly pipeline's `gold` sample (all read it with gold_column: gold)

labelstudio.py holds Label Studio's task / annotation JSON and the matching labeling config.
"""
