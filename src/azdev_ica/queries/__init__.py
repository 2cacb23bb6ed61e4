"""Read models. Nothing here writes."""
