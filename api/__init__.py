"""HTTP service (FastAPI) and the embeddable chat widget; see api.app.create_app."""
