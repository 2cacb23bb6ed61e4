"""Operating ICA by sight: Prometheus metrics (`GET /metrics`) and `ica doctor`.

- `instruments`: the per-process counters and histograms (requests, gate decisions), written
  to prometheus-client's multiprocess files when `ica serve` runs several workers;
- `collector`: the gauges read from the database at scrape time (approvals, SLA, locks,
  ledger, witnesses, jobs, outbox), computed once by the process that answers the scrape;
- `multiproc`: the multiprocess directory `ica serve` prepares, and dead workers' files;
- `doctor`: the checks of a running installation.
"""
