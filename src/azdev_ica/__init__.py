"""ICA: a deployment-governance control plane.

Pipelines report every run; production deploys wait for dual approval; every action lands
in a tamper-evident audit ledger.
"""

__version__ = "0.1.0"
