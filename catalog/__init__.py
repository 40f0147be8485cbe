"""The model catalog: models, their routes and posted prices, loaded from reviewed data files."""
