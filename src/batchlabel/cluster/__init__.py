"""Cluster operations: submit a job spec to a Ray cluster (Ray Job Submission API) and follow it."""
