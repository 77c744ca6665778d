"""Steps that combine the core pieces into user-level jobs (sessions, the demo, batches)."""
