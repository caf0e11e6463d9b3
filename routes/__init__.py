"""The analysis: snapping, the space-time cube, emerging hot spots, routes and corridor overlap."""
