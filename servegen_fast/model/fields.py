"""Trace fields shared across the package (placeholder until the fields module lands)."""
ITEM_FIELDS = {"image_tokens": "image_count", "audio_tokens": "audio_count", "video_tokens": "video_count"}
REASON_RATIO = "reason_ratio"
