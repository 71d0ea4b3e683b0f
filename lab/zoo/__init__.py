"""Training recipes, diagnostics and experiments of the zoo's tiny model pairs (not shipped)."""
