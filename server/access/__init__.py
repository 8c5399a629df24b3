"""Who is calling and what they may do: clients, credentials on every endpoint, rate limits.

``clients.py`` holds the registry and the caller of the current request (a context variable
the layer registry consults); ``middleware.py`` authenticates once per request;
``rate_limit.py`` counts requests per client in Redis (or per process without it).
"""
