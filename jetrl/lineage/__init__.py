"""Lineage: the Postgres record of every run, prompt, group, sample, reward, batch and version."""
