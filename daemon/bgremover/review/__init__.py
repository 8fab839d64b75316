"""The review of done items: the record of their quality signals and decisions, and the markers a client writes."""
