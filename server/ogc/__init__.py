"""OGC services (WMS today) on top of the one pipeline: parse KVP -> RenderRequest -> response."""
