"""Sentinel Hub API compatibility: Catalog API, OAuth2 token endpoint, and the pieces WFS shares."""
