"""Operator tools over the ledger in the database: verify it, export a yearly bundle, and
replay it into the projections (runs, events, policies, keys) to prove there are no gaps."""
