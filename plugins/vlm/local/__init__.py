"""The local VLM engine (placeholder while it is being written)."""
