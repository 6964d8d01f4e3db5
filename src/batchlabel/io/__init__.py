"""Input and output: storage (local and s3:// through fsspec/pyarrow), the source (list, plan, read shards) and the sink (exactly-once shard commits, manifest last)."""
