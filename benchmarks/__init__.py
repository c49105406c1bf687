"""``make bench``: toolkit against LangGraph's caches and other peers, ratios from one run."""
