"""Router: rules, `auto`, per-route health and breakers; proxies route locally on its published snapshot."""
