"""The `ica` command: server and admin commands, and the pipeline client.

The pipeline client must start fast on a build agent, so `main` builds an argparse tree
whose handlers import what they need only when they run.
"""
