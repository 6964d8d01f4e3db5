"""Helpers for testing batchlabel deployments (fault injection). Not used by normal jobs."""
