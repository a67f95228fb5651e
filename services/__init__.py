"""The domain: accounts, tokens, workspaces, payments, OAuth, rate limits,
the database and the Docker adapter. Nothing here imports tornado.web."""
