"""Runtime catalogue: layers built from the configuration and the scene search behind them."""
