"""The web console: static pages served under `/` by the API process (`routes.install`).

Every piece of data it shows comes from the `/v1` API, called from the browser with the user's
API key in the `Authorization` header, so the console sees exactly what the key may see.
"""
