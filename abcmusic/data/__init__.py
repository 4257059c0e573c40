"""The data pipeline: MIDI files -> cleaned ABC -> deduplicated, split, tokenized Parquet."""
