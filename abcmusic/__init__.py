"""abcmusic: scaling laws for symbolic-music language models."""
