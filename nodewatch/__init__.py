"""nodewatch: the per-node Spot Guard agent.

It polls the instance metadata service (IMDSv2) for the rebalance recommendation and the spot
interruption notice and records them as annotations on its own Node. Standard library and
prometheus_client only: it runs on every spot node and must stay small.
"""
