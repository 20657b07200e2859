"""Spot Guard's Grafana dashboard, built as code with the Grafana Foundation SDK (a development dependency).

``python -m dashboards`` writes the JSON the chart and the kustomize monitoring base ship; ``--check`` fails when
a shipped file is not what the code builds.
"""
