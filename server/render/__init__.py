"""Arrays -> bytes: image encoders and legends. No data access here."""
