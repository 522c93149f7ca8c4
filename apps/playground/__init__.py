"""The playground: one static page and plain JavaScript modules that drive the API from a browser."""
