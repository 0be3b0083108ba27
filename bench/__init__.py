"""The provider's benchmark (issue #7): `scripts/bench`, or `python -m bench [--quick]`.

Modules: `servers` (the loopback API and token server, in its own process), `common` (connections and
scenario processes), one module per scenario (`clients`, `tokens`, `get_token`, `imports`, `deferrable`),
`machine` (where a run was measured), `targets` (the targets, checked against a run), `report` (the
printed table, a section a scenario), `run` (the orchestrator).
"""
