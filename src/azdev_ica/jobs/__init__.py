"""Background jobs that run in the server under database leases: the ledger's sealer."""
