"""The Docker backend (WORKSPACE_BACKEND=docker): one container per workspace.
`backend` holds the class; `support` the plain-data pieces (error
translation, events, stats, addresses)."""
