"""`rbtc-indexer serve`: the stateless read API over the read tables, with live push (SSE) and a PostgREST subset.

Modules: `snapshot` (consistent reads and what block they reflect), `hub` (the LISTEN connection and its
subscribers), `routes` (the upstream-compatible JSON routes), `shapes` (row to JSON conversions with the upstream's
type quirks), `stream` (Server-Sent Events), `postgrest` (the /rest/v1 subset), `guards` (CORS, rate limits,
access logs, metrics), `status_page` (the operator page at /), `app` (wiring) and `server` (the process).
"""
