"""optiserve: optimize a trained model, then serve it over HTTP with Ray Serve."""
