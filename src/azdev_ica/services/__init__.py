"""THE write path. Every function here is one action: one transaction that changes state
and appends its audit record together. Nothing outside this package writes.
"""
