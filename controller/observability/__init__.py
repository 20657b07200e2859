"""The controller's observability building blocks: Prometheus metrics and their HTTP endpoint, structured
logs, Kubernetes Events and OpenTelemetry traces.

Each lives in its own module and is imported from there (``controller.observability.metrics`` ...); this
package imports nothing on purpose, so that using one of them never loads the others' libraries (the
OpenTelemetry SDK in particular is only loaded when tracing is switched on).
"""
