"""ABC notation rules: cleaning converted text, judging validity with abc2midi, musical metrics."""
