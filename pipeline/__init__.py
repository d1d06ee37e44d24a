"""Orchestration of the FFHQ-UV rebuild: config, inputs, shards, manifest, storage, Ray execution, CLI."""

__version__ = "0.1.0"
