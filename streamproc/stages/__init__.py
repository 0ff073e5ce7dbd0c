"""The Faust worker: its app, its three agents, and how their state is written and committed."""
