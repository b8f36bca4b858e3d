"""Observability: the figures a process counts (`metrics`), what it shows of them
(`/metrics`, `/dashboard`), shared between workers (`peers`), and structured logs
carrying request ids (`logs`)."""
