"""ABC text rules: cleaning (and, later, validation) of ABC notation."""
