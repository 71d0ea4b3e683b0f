"""Outside the wheel: how the shipped models were made, and experiments on them."""
