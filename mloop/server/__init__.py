"""The team server: a REST API and a web UI over one workspace, with tokens, roles and an audit trail."""
