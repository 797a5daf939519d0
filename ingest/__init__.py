"""Ingest: intake (seal, dedupe), the media pipeline's stages, the media tools adapter."""
